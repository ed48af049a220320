//! The migrator of the embedded SQLite schema: [`crate::sql::migrate`] over SQLite's
//! own files and bookkeeping table.
//!
//! A migration's transaction begins `IMMEDIATE` (`rows::BEGIN_WRITE`), taking the
//! database's write lock up front, so two processes opening the same file serialise
//! there and the second sees the first one's record.

use sqlx::{SqliteConnection, SqlitePool};

crate::sql::migrate::migrate!(SqlitePool, SqliteConnection, crate::sql::sqlite);

/// The schema of the SQLite store, oldest first: every file of
/// `migrations/sqlite/`, listed by the build script.
pub(crate) const MIGRATIONS: &[Migration] =
    include!(concat!(env!("OUT_DIR"), "/sqlite_migrations.rs"));

/// How log lines name this migrator.
const BACKEND: &str = "sqlite";

/// Creates the bookkeeping table unless it exists (`applied_at` holds milliseconds
/// since the Unix epoch, like every time column here) and reads what it lists.
async fn bookkeeping(pool: &SqlitePool) -> Result<Applied, MigrateError> {
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
    .map_err(store_err)?;
    applied(&mut *pool.acquire().await.map_err(store_err)?).await
}

/// Nothing to take: a migration's `BEGIN IMMEDIATE` transaction holds the database's
/// write lock from its start.
async fn lock(_conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    Ok(())
}

/// A fresh in-memory database.
#[cfg(test)]
async fn test_pool() -> SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap()
}

/// A campaign as builds before campaign lifecycles (`0004`) stored it.
#[cfg(test)]
const OLD_CAMPAIGN: (usize, &str) = (
    3,
    "INSERT INTO tenants VALUES ('acme', 'Acme', 1, 1);
     INSERT INTO campaigns (id, tenant, name, from_addr, template, created_at)
     VALUES ('c1', 'acme', 'Old', 'news@shop.example', '{}', 1234)",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_named_like_their_files() {
        assert_eq!(MIGRATIONS[0].file_name(), "0001_initial.sql");
        assert_eq!(MIGRATIONS[1].file_name(), "0002_leases.sql");
        assert_eq!(MIGRATIONS[2].file_name(), "0003_api_keys.sql");
        assert_eq!(MIGRATIONS[3].file_name(), "0004_campaign_lifecycle.sql");
    }

    #[tokio::test]
    async fn the_embedded_schema_upgrades_a_database_of_an_older_build() {
        let pool = test_pool().await;
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
}
