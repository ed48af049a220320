//! Deferred sends on Postgres: the shared SQL of [`crate::sql::deferred`].

crate::sql::deferred::deferred!(
    sqlx::PgPool,
    sqlx::PgConnection,
    sqlx::postgres::PgRow,
    crate::sql::postgres
);
