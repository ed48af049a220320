//! Partition ownership on SQLite: the shared SQL of [`crate::sql::leases`].

crate::sql::leases::leases!(
    sqlx::SqlitePool,
    sqlx::SqliteConnection,
    sqlx::sqlite::SqliteRow,
    crate::sql::sqlite
);
