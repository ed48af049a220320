//! Tenants' sending domains on SQLite: the shared SQL of [`crate::sql::domains`].

crate::sql::domains::domains!(
    sqlx::SqlitePool,
    sqlx::sqlite::SqliteRow,
    crate::sql::sqlite
);
