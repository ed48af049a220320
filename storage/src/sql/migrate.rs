//! A small migrator for the embedded schema, one for both dialects.
//!
//! Migrations are SQL files compiled into the binary, applied in version order, each in
//! its own transaction together with its row in `_maily_migrations`, so a crash leaves
//! either the whole migration or none of it (DDL is transactional in both databases).
//! An applied migration whose file has changed since is refused: silently diverging
//! schemas are worse than not starting.

/// The migrator for one backend: `$pool` and `$conn` are its pool and connection types,
/// `$sql` its dialect (see [`super::domains::domains`]). Besides `rows` (`BEGIN_WRITE`,
/// `NOW`, `db_err`, `is_transient`), the backend module that expands it provides:
///
/// - `MIGRATIONS`, its schema, oldest first;
/// - `BACKEND`, its name in log lines;
/// - `bookkeeping(pool)`, which creates `_maily_migrations` (each backend's own column
///   types) unless it exists and returns what it lists, read with `applied`;
/// - `lock(conn)`, which keeps other processes from migrating until the running
///   transaction ends, unless `BEGIN_WRITE` already does;
/// - in tests, `test_pool()`, an empty database of its own, and `OLD_CAMPAIGN`: how
///   many migrations builds before campaign lifecycles had, and the statements with
///   which they stored a campaign (created at 1234 ms) in that schema.
macro_rules! migrate {
    ($pool:ty, $conn:ty, $sql:path) => {
        use super::rows::{BEGIN_WRITE, NOW, db_err, is_transient};
        use crate::migration::{Applied, MigrateError, Migration, check_applied};
        use tracing::info;

        /// Applies every migration in `migrations` that `pool`'s database lacks.
        pub(crate) async fn run(
            pool: &$pool,
            migrations: &[Migration],
        ) -> Result<(), MigrateError> {
            let applied = bookkeeping(pool).await?;
            check_applied(&applied, migrations)?;
            for m in migrations
                .iter()
                .filter(|m| !applied.contains_key(&m.version))
            {
                apply(pool, m).await?;
            }
            Ok(())
        }

        fn store_err(e: sqlx::Error) -> MigrateError {
            MigrateError::Store(db_err(e))
        }

        /// The migrations `_maily_migrations` lists: version, name and checksum.
        async fn applied(conn: &mut $conn) -> Result<Applied, MigrateError> {
            use sqlx::Row;
            let rows = sqlx::query("SELECT version, name, checksum FROM _maily_migrations")
                .fetch_all(conn)
                .await
                .map_err(store_err)?;
            rows.iter()
                .map(|r| {
                    let read = || -> Result<_, sqlx::Error> {
                        Ok((
                            r.try_get("version")?,
                            (r.try_get("name")?, r.try_get("checksum")?),
                        ))
                    };
                    read().map_err(store_err)
                })
                .collect()
        }

        async fn apply(pool: &$pool, m: &Migration) -> Result<(), MigrateError> {
            let file = m.file_name();
            let failed = |source: sqlx::Error| MigrateError::Failed {
                file: file.clone(),
                transient: is_transient(&source),
                source,
            };
            // Another process may have applied this migration since `run` read the table.
            // The write transaction and `lock` make such processes take turns, so what we
            // read next stays true until we commit.
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(failed)?;
            lock(&mut tx).await.map_err(failed)?;
            let existing: Option<String> = sqlx::query_scalar(&$sql(
                "SELECT checksum FROM _maily_migrations WHERE version = $1",
            ))
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
            // `Executor::execute` rather than `RawSql::execute`: with the latter, rustc
            // cannot prove this future `Send` (a limit of its higher-ranked lifetimes),
            // which callers that spawn a migration need.
            sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(m.sql))
                .await
                .map_err(failed)?;
            sqlx::query(&$sql(&format!(
                "INSERT INTO _maily_migrations (version, name, checksum, applied_at)
                 VALUES ($1, $2, $3, {NOW})"
            )))
            .bind(m.version)
            .bind(m.name)
            .bind(m.checksum())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            info!(migration = %file, "applied {BACKEND} migration");
            Ok(())
        }

        #[cfg(test)]
        mod shared_tests {
            use super::*;
            use maily_engine::ports::StoreError;

            pub(super) const FIRST: Migration = Migration {
                version: 1,
                name: "first",
                sql: "CREATE TABLE a (x BIGINT);",
            };
            pub(super) const SECOND: Migration = Migration {
                version: 2,
                name: "second",
                sql: "CREATE TABLE b (y BIGINT); INSERT INTO b VALUES (1);",
            };

            async fn versions(pool: &$pool) -> Vec<i64> {
                sqlx::query_scalar("SELECT version FROM _maily_migrations ORDER BY version")
                    .fetch_all(pool)
                    .await
                    .unwrap()
            }

            #[tokio::test]
            async fn later_migrations_apply_on_top_of_earlier_ones() {
                let pool = test_pool().await;
                run(&pool, &[FIRST]).await.unwrap();
                run(&pool, &[FIRST, SECOND]).await.unwrap();
                run(&pool, &[FIRST, SECOND]).await.unwrap();
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM b")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                assert_eq!(n, 1, "second migration ran once");
                assert_eq!(versions(&pool).await, vec![1, 2]);
            }

            #[tokio::test]
            async fn a_failing_migration_leaves_no_trace() {
                let pool = test_pool().await;
                let broken = Migration {
                    version: 2,
                    name: "broken",
                    sql: "CREATE TABLE c (z BIGINT); INSERT INTO nowhere VALUES (1);",
                };
                let err = run(&pool, &[FIRST, broken]).await.unwrap_err();
                assert!(err.to_string().contains("0002_broken.sql"), "{err}");
                assert!(matches!(StoreError::from(err), StoreError::Corrupt(_)));
                let c = sqlx::query("SELECT count(*) FROM c").fetch_one(&pool).await;
                assert!(c.is_err(), "table of the failed migration rolled back");
                assert_eq!(versions(&pool).await, vec![1]);
                run(&pool, &[FIRST]).await.unwrap();
            }

            #[tokio::test]
            async fn a_changed_or_unknown_migration_is_refused() {
                let pool = test_pool().await;
                run(&pool, &[FIRST, SECOND]).await.unwrap();
                let edited = Migration {
                    sql: "CREATE TABLE a (x BIGINT, w TEXT);",
                    ..FIRST
                };
                let err = run(&pool, &[edited, SECOND]).await.unwrap_err();
                assert!(matches!(
                    err,
                    MigrateError::Changed { ref file, .. } if file == "0001_first.sql"
                ));
                let err = run(&pool, &[FIRST]).await.unwrap_err();
                assert!(
                    matches!(err, MigrateError::Unknown { version: 2, .. }),
                    "{err}"
                );
            }

            #[tokio::test]
            async fn campaigns_of_an_older_build_become_running() {
                let (older, insert) = OLD_CAMPAIGN;
                let pool = test_pool().await;
                run(&pool, &MIGRATIONS[..older]).await.unwrap();
                sqlx::raw_sql(insert).execute(&pool).await.unwrap();
                run(&pool, MIGRATIONS).await.unwrap();
                let state: (String, Option<i64>, i64) =
                    sqlx::query_as("SELECT status, scheduled_at, status_at FROM campaigns")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                assert_eq!(state, ("running".to_string(), None, 1234));
            }

            #[test]
            fn embedded_migrations_are_numbered_in_order() {
                for (i, m) in MIGRATIONS.iter().enumerate() {
                    assert_eq!(m.version, i as i64 + 1);
                    assert!(!m.sql.trim().is_empty(), "{} is empty", m.file_name());
                }
            }
        }
    };
}

pub(crate) use migrate;
