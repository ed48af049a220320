//! Deferred sends on SQLite: the shared SQL of [`crate::sql::deferred`].

crate::sql::deferred::deferred!(
    sqlx::SqlitePool,
    sqlx::SqliteConnection,
    sqlx::sqlite::SqliteRow,
    crate::sql::sqlite
);
