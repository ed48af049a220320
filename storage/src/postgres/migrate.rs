//! A small migrator for the embedded Postgres schema.
//!
//! Migrations are SQL files compiled into the binary, applied in version order, each in
//! its own transaction together with its row in `_maily_migrations`, so a crash leaves
//! either the whole migration or none of it (Postgres DDL is transactional). An
//! applied migration whose file has changed since is refused: silently diverging
//! schemas are worse than not starting.
//!
//! Every transaction first takes a transaction-scoped advisory lock keyed on the
//! schema, so processes starting together against the same schema take turns: the
//! second one finds the first one's rows and applies nothing. Processes migrating
//! different schemas do not wait for each other.

use super::rows::{db_err, is_transient};
use crate::migration::{MigrateError, Migration, check_applied};
use sqlx::{Executor, PgConnection, PgPool, Row};
use std::collections::BTreeMap;
use tracing::info;

/// The schema of the Postgres store, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "api_keys",
        sql: include_str!("../../migrations/postgres/0002_api_keys.sql"),
    },
    Migration {
        version: 3,
        name: "campaign_lifecycle",
        sql: include_str!("../../migrations/postgres/0003_campaign_lifecycle.sql"),
    },
    Migration {
        version: 4,
        name: "chain_submissions",
        sql: include_str!("../../migrations/postgres/0004_chain_submissions.sql"),
    },
    Migration {
        version: 5,
        name: "suppression_case",
        sql: include_str!("../../migrations/postgres/0005_suppression_case.sql"),
    },
    Migration {
        version: 6,
        name: "tenant_domains",
        sql: include_str!("../../migrations/postgres/0006_tenant_domains.sql"),
    },
    Migration {
        version: 7,
        name: "domain_keys",
        sql: include_str!("../../migrations/postgres/0007_domain_keys.sql"),
    },
    Migration {
        version: 8,
        name: "key_issuer",
        sql: include_str!("../../migrations/postgres/0008_key_issuer.sql"),
    },
    Migration {
        version: 9,
        name: "in_step",
        sql: include_str!("../../migrations/postgres/0009_in_step.sql"),
    },
];

/// First half of the advisory lock key ("maily" in ASCII, truncated to 31 bits);
/// the second half is a hash of the schema name.
const LOCK_CLASS: i32 = 0x6d61_696c;

/// Takes the migration lock of the connection's current schema until the end of the
/// running transaction.
async fn lock(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // current_schema() is NULL when no schema on the search_path exists; the lock
    // function is strict and would then silently take no lock at all.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))")
        .bind(LOCK_CLASS)
        .execute(conn)
        .await?;
    Ok(())
}

/// Applies every migration in `migrations` that `pool`'s schema lacks.
pub(crate) async fn run(pool: &PgPool, migrations: &[Migration]) -> Result<(), MigrateError> {
    let store_err = |e| MigrateError::Store(db_err(e));
    // Creating the bookkeeping table is not safe against a concurrent creator (not
    // even with IF NOT EXISTS), hence the lock around it too. Checking first keeps
    // Postgres from sending an "already exists" notice on every start.
    let mut tx = pool.begin().await.map_err(store_err)?;
    lock(&mut tx).await.map_err(store_err)?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_maily_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await
        .map_err(store_err)?;
    if !exists {
        tx.execute(
            "CREATE TABLE _maily_migrations (
                version    BIGINT      NOT NULL PRIMARY KEY,
                name       TEXT        NOT NULL,
                checksum   TEXT        NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(store_err)?;
    }
    let applied = applied(&mut tx).await?;
    tx.commit().await.map_err(store_err)?;
    check_applied(&applied, migrations)?;

    for m in migrations
        .iter()
        .filter(|m| !applied.contains_key(&m.version))
    {
        apply(pool, m).await?;
    }
    Ok(())
}

async fn applied(conn: &mut PgConnection) -> Result<BTreeMap<i64, (String, String)>, MigrateError> {
    let rows = sqlx::query("SELECT version, name, checksum FROM _maily_migrations")
        .fetch_all(conn)
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

async fn apply(pool: &PgPool, m: &Migration) -> Result<(), MigrateError> {
    let file = m.file_name();
    let failed = |source: sqlx::Error| MigrateError::Failed {
        file: file.clone(),
        transient: is_transient(&source),
        source,
    };
    let mut tx = pool.begin().await.map_err(failed)?;
    // Another process may have applied this migration between our read and the lock;
    // with the lock held, what we read now stays true until we commit.
    lock(&mut tx).await.map_err(failed)?;
    let existing: Option<String> =
        sqlx::query_scalar("SELECT checksum FROM _maily_migrations WHERE version = $1")
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
    tx.execute(m.sql).await.map_err(failed)?;
    sqlx::query("INSERT INTO _maily_migrations (version, name, checksum) VALUES ($1, $2, $3)")
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    info!(migration = %file, "applied postgres migration");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::testing;
    use maily_engine::ports::StoreError;

    const FIRST: Migration = Migration {
        version: 1,
        name: "first",
        sql: "CREATE TABLE a (x BIGINT);",
    };
    const SECOND: Migration = Migration {
        version: 2,
        name: "second",
        sql: "CREATE TABLE b (y BIGINT); INSERT INTO b VALUES (1);",
    };

    #[tokio::test]
    async fn later_migrations_apply_on_top_of_earlier_ones() {
        let pool = testing::empty_schema_pool().await;
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
        let pool = testing::empty_schema_pool().await;
        let broken = Migration {
            version: 2,
            name: "broken",
            sql: "CREATE TABLE c (z BIGINT); INSERT INTO nowhere VALUES (1);",
        };
        let err = run(&pool, &[FIRST, broken]).await.unwrap_err();
        assert!(err.to_string().contains("0002_broken.sql"), "{err}");
        assert!(matches!(StoreError::from(err), StoreError::Corrupt(_)));
        let c: Option<String> = sqlx::query_scalar("SELECT to_regclass('c')::text")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(c, None, "table of the failed migration rolled back");
        run(&pool, &[FIRST]).await.unwrap();
    }

    #[tokio::test]
    async fn a_changed_or_unknown_migration_is_refused() {
        let pool = testing::empty_schema_pool().await;
        run(&pool, &[FIRST, SECOND]).await.unwrap();
        let edited = Migration {
            sql: "CREATE TABLE a (x BIGINT, w TEXT);",
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_runs_take_turns() {
        let pool = testing::empty_schema_pool().await;
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { run(&pool, &[FIRST, SECOND]).await })
            })
            .collect();
        for r in runs {
            r.await.unwrap().unwrap();
        }
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM b")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn embedded_migrations_are_in_order_and_named_like_their_files() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
            assert!(!m.sql.trim().is_empty(), "{} is empty", m.file_name());
        }
        assert_eq!(MIGRATIONS[0].file_name(), "0001_initial.sql");
        assert_eq!(MIGRATIONS[1].file_name(), "0002_api_keys.sql");
        assert_eq!(MIGRATIONS[2].file_name(), "0003_campaign_lifecycle.sql");
    }

    #[tokio::test]
    async fn the_embedded_schema_upgrades_a_schema_of_an_older_build() {
        let pool = testing::empty_schema_pool().await;
        run(&pool, &MIGRATIONS[..1]).await.unwrap();
        run(&pool, MIGRATIONS).await.unwrap();
        let id_type: String = sqlx::query_scalar(
            "SELECT data_type FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'api_keys'
               AND column_name = 'id'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            id_type, "text",
            "the placeholder api_keys table was replaced"
        );
    }

    #[tokio::test]
    async fn api_keys_written_by_hand_stop_the_upgrade() {
        let pool = testing::empty_schema_pool().await;
        run(&pool, &MIGRATIONS[..1]).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO tenants (id, name) VALUES ('acme', 'Acme');
             INSERT INTO api_keys (tenant, name, secret_hash)
             VALUES ('acme', 'by hand', '\\x00112233445566778899aabbccddeeff')",
        )
        .execute(&pool)
        .await
        .unwrap();
        let err = run(&pool, MIGRATIONS).await.unwrap_err();
        assert!(err.to_string().contains("0002_api_keys.sql"), "{err}");
        assert!(err.to_string().contains("move them away"), "{err}");
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(kept, 1, "the rows were not dropped");
    }

    #[tokio::test]
    async fn campaigns_of_an_older_build_become_running() {
        let pool = testing::empty_schema_pool().await;
        run(&pool, &MIGRATIONS[..2]).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO tenants (id, name) VALUES ('acme', 'Acme');
             INSERT INTO campaigns (id, tenant, name, from_addr, template, created_at)
             VALUES (gen_random_uuid(), 'acme', 'Old', 'news@shop.example', '{}',
                     to_timestamp(1.234))",
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

    #[tokio::test]
    async fn placeholder_contacts_written_by_hand_stop_the_upgrade() {
        let pool = testing::empty_schema_pool().await;
        run(&pool, &MIGRATIONS[..2]).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO tenants (id, name) VALUES ('acme', 'Acme');
             INSERT INTO contacts (tenant, email) VALUES ('acme', 'a@example.com')",
        )
        .execute(&pool)
        .await
        .unwrap();
        let err = run(&pool, MIGRATIONS).await.unwrap_err();
        assert!(
            err.to_string().contains("0003_campaign_lifecycle.sql"),
            "{err}"
        );
        assert!(err.to_string().contains("move them away"), "{err}");
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(kept, 1, "the rows were not dropped");
    }
}
