//! Tenants, campaigns and suppression lists on Postgres: the shared SQL of
//! [`crate::sql::catalog`].

crate::sql::catalog::catalog!(sqlx::PgPool, sqlx::postgres::PgRow, crate::sql::postgres);
