//! The migrator of the embedded Postgres schema: [`crate::sql::migrate`] over
//! Postgres' own files and bookkeeping table, in the connection's current schema.
//!
//! Every transaction first takes a transaction-scoped advisory lock keyed on the
//! schema, so processes starting together against the same schema take turns: the
//! second one finds the first one's rows and applies nothing. Processes migrating
//! different schemas do not wait for each other.

use sqlx::{Executor, PgConnection, PgPool};

crate::sql::migrate::migrate!(PgPool, PgConnection, crate::sql::postgres);

/// The schema of the Postgres store, oldest first: every file of
/// `migrations/postgres/`, listed by the build script.
pub(crate) const MIGRATIONS: &[Migration] =
    include!(concat!(env!("OUT_DIR"), "/postgres_migrations.rs"));

/// How log lines name this migrator.
const BACKEND: &str = "postgres";

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

/// Creates the bookkeeping table unless it exists and reads what it lists, in one
/// transaction under the migration lock.
async fn bookkeeping(pool: &PgPool) -> Result<Applied, MigrateError> {
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
    Ok(applied)
}

#[cfg(test)]
use crate::postgres::testing::empty_schema_pool as test_pool;

/// A campaign as builds before campaign lifecycles (`0003`) stored it.
#[cfg(test)]
const OLD_CAMPAIGN: (usize, &str) = (
    2,
    "INSERT INTO tenants (id, name) VALUES ('acme', 'Acme');
     INSERT INTO campaigns (id, tenant, name, from_addr, template, created_at)
     VALUES (gen_random_uuid(), 'acme', 'Old', 'news@shop.example', '{}',
             to_timestamp(1.234))",
);

#[cfg(test)]
mod tests {
    use super::shared_tests::{FIRST, SECOND};
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_runs_take_turns() {
        let pool = test_pool().await;
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
    fn embedded_migrations_are_named_like_their_files() {
        assert_eq!(MIGRATIONS[0].file_name(), "0001_initial.sql");
        assert_eq!(MIGRATIONS[1].file_name(), "0002_api_keys.sql");
        assert_eq!(MIGRATIONS[2].file_name(), "0003_campaign_lifecycle.sql");
    }

    #[tokio::test]
    async fn the_embedded_schema_upgrades_a_schema_of_an_older_build() {
        let pool = test_pool().await;
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
        let pool = test_pool().await;
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
    async fn placeholder_contacts_written_by_hand_stop_the_upgrade() {
        let pool = test_pool().await;
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
