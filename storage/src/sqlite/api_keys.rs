//! API keys on SQLite: the shared SQL of [`crate::sql::api_keys`].

crate::sql::api_keys::api_keys!(
    sqlx::SqlitePool,
    sqlx::sqlite::SqliteRow,
    crate::sql::sqlite
);
