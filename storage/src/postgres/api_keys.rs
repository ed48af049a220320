//! API keys on Postgres: the shared SQL of [`crate::sql::api_keys`].

crate::sql::api_keys::api_keys!(sqlx::PgPool, sqlx::postgres::PgRow, crate::sql::postgres);
