//! A small migrator for the embedded SQLite schema.
//!
//! Migrations are SQL files compiled into the binary, applied in version order, each in
//! its own transaction together with its row in `_maily_migrations`, so a crash leaves
//! either the whole migration or none of it. An applied migration whose file has
//! changed since is refused: silently diverging schemas are worse than not starting.

use super::rows::{db_err, is_transient};
use crate::migration::{MigrateError, Migration, check_applied};
use maily_engine::Timestamp;
use sqlx::{Row, SqlitePool};
use std::collections::BTreeMap;
use tracing::info;

/// The schema of the SQLite store, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "leases",
        sql: include_str!("../../migrations/sqlite/0002_leases.sql"),
    },
    Migration {
        version: 3,
        name: "api_keys",
        sql: include_str!("../../migrations/sqlite/0003_api_keys.sql"),
    },
    Migration {
        version: 4,
        name: "campaign_lifecycle",
        sql: include_str!("../../migrations/sqlite/0004_campaign_lifecycle.sql"),
    },
    Migration {
        version: 5,
        name: "chain_submissions",
        sql: include_str!("../../migrations/sqlite/0005_chain_submissions.sql"),
    },
    Migration {
        version: 6,
        name: "suppression_case",
        sql: include_str!("../../migrations/sqlite/0006_suppression_case.sql"),
    },
    Migration {
        version: 7,
        name: "tenant_domains",
        sql: include_str!("../../migrations/sqlite/0007_tenant_domains.sql"),
    },
    Migration {
        version: 8,
        name: "domain_keys",
        sql: include_str!("../../migrations/sqlite/0008_domain_keys.sql"),
    },
    Migration {
        version: 9,
        name: "key_issuer",
        sql: include_str!("../../migrations/sqlite/0009_key_issuer.sql"),
    },
];

/// Applies every migration in `migrations` that `pool`'s database lacks.
pub(crate) async fn run(pool: &SqlitePool, migrations: &[Migration]) -> Result<(), MigrateError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS _maily_migrations (
            version    INTEGER NOT NULL PRIMARY KEY,
            name       TEXT    NOT NULL,
            checksum   TEXT    NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .execute(pool)
    .await
    .map_err(|e| MigrateError::Store(db_err(e)))?;

    let applied = applied(pool).await?;
    check_applied(&applied, migrations)?;

    for m in migrations
        .iter()
        .filter(|m| !applied.contains_key(&m.version))
    {
        apply(pool, m).await?;
    }
    Ok(())
}

async fn applied(pool: &SqlitePool) -> Result<BTreeMap<i64, (String, String)>, MigrateError> {
    let rows = sqlx::query("SELECT version, name, checksum FROM _maily_migrations")
        .fetch_all(pool)
        .await
        .map_err(|e| MigrateError::Store(db_err(e)))?;
    rows.iter()
        .map(|r| {
            let read = || -> Result<_, sqlx::Error> {
                Ok((
                    r.try_get("version")?,
                    (r.try_get("name")?, r.try_get("checksum")?),
                ))
            };
            read().map_err(|e| MigrateError::Store(db_err(e)))
        })
        .collect()
}

async fn apply(pool: &SqlitePool, m: &Migration) -> Result<(), MigrateError> {
    let file = m.file_name();
    let failed = |source: sqlx::Error| MigrateError::Failed {
        file: file.clone(),
        transient: is_transient(&source),
        source,
    };
    // IMMEDIATE takes the write lock up front, so two processes opening the same file
    // serialise here and the second sees the first one's record below.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(failed)?;
    let existing: Option<String> =
        sqlx::query_scalar("SELECT checksum FROM _maily_migrations WHERE version = ?")
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(failed)?;
    if let Some(applied) = existing {
        let embedded = m.checksum();
        if applied != embedded {
            return Err(MigrateError::Changed {
                file,
                applied,
                embedded,
            });
        }
        return Ok(());
    }
    sqlx::raw_sql(m.sql)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    sqlx::query(
        "INSERT INTO _maily_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
    )
    .bind(m.version)
    .bind(m.name)
    .bind(m.checksum())
    .bind(Timestamp::now().0)
    .execute(&mut *tx)
    .await
    .map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    info!(migration = %file, "applied sqlite migration");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use maily_engine::ports::StoreError;
    use sqlx::sqlite::SqlitePoolOptions;

    async fn memory_pool() -> SqlitePool {
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap()
    }

    const FIRST: Migration = Migration {
        version: 1,
        name: "first",
        sql: "CREATE TABLE a (x INTEGER);",
    };
    const SECOND: Migration = Migration {
        version: 2,
        name: "second",
        sql: "CREATE TABLE b (y INTEGER); INSERT INTO b VALUES (1);",
    };

    #[tokio::test]
    async fn later_migrations_apply_on_top_of_earlier_ones() {
        let pool = memory_pool().await;
        run(&pool, &[FIRST]).await.unwrap();
        run(&pool, &[FIRST, SECOND]).await.unwrap();
        run(&pool, &[FIRST, SECOND]).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM b")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "second migration ran once");
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _maily_migrations ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(versions, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_failing_migration_leaves_no_trace() {
        let pool = memory_pool().await;
        let broken = Migration {
            version: 2,
            name: "broken",
            sql: "CREATE TABLE c (z INTEGER); INSERT INTO nowhere VALUES (1);",
        };
        let err = run(&pool, &[FIRST, broken]).await.unwrap_err();
        assert!(err.to_string().contains("0002_broken.sql"), "{err}");
        assert!(matches!(StoreError::from(err), StoreError::Corrupt(_)));
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'c'")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(
            tables.is_empty(),
            "table of the failed migration rolled back"
        );
        run(&pool, &[FIRST]).await.unwrap();
    }

    #[tokio::test]
    async fn a_changed_or_unknown_migration_is_refused() {
        let pool = memory_pool().await;
        run(&pool, &[FIRST, SECOND]).await.unwrap();
        let edited = Migration {
            sql: "CREATE TABLE a (x INTEGER, w TEXT);",
            ..FIRST
        };
        let err = run(&pool, &[edited, SECOND]).await.unwrap_err();
        assert!(matches!(err, MigrateError::Changed { ref file, .. } if file == "0001_first.sql"));
        let err = run(&pool, &[FIRST]).await.unwrap_err();
        assert!(
            matches!(err, MigrateError::Unknown { version: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn embedded_migrations_are_in_order_and_named_like_their_files() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
            assert!(!m.sql.trim().is_empty(), "{} is empty", m.file_name());
        }
        assert_eq!(MIGRATIONS[0].file_name(), "0001_initial.sql");
        assert_eq!(MIGRATIONS[1].file_name(), "0002_leases.sql");
        assert_eq!(MIGRATIONS[2].file_name(), "0003_api_keys.sql");
        assert_eq!(MIGRATIONS[3].file_name(), "0004_campaign_lifecycle.sql");
    }

    #[tokio::test]
    async fn the_embedded_schema_upgrades_a_database_of_an_older_build() {
        let pool = memory_pool().await;
        run(&pool, &MIGRATIONS[..1]).await.unwrap();
        run(&pool, MIGRATIONS).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE name IN ('leases', 'members', 'api_keys')
             ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(tables, vec!["api_keys", "leases", "members"]);
    }

    #[tokio::test]
    async fn campaigns_of_an_older_build_become_running() {
        let pool = memory_pool().await;
        run(&pool, &MIGRATIONS[..3]).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO tenants VALUES ('acme', 'Acme', 1, 1);
             INSERT INTO campaigns (id, tenant, name, from_addr, template, created_at)
             VALUES ('c1', 'acme', 'Old', 'news@shop.example', '{}', 1234)",
        )
        .execute(&pool)
        .await
        .unwrap();
        run(&pool, MIGRATIONS).await.unwrap();
        let state: (String, Option<i64>, i64) =
            sqlx::query_as("SELECT status, scheduled_at, status_at FROM campaigns")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(state, ("running".to_string(), None, 1234));
    }
}
