//! Partition ownership on Postgres: the shared SQL of [`crate::sql::leases`].

crate::sql::leases::leases!(
    sqlx::PgPool,
    sqlx::PgConnection,
    sqlx::postgres::PgRow,
    crate::sql::postgres
);
