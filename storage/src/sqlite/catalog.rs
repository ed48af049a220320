//! Tenants, campaigns and suppression lists on SQLite: the shared SQL of
//! [`crate::sql::catalog`].

crate::sql::catalog::catalog!(
    sqlx::SqlitePool,
    sqlx::sqlite::SqliteRow,
    crate::sql::sqlite
);
