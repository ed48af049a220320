//! Tenants' sending domains on Postgres: the shared SQL of [`crate::sql::domains`].

crate::sql::domains::domains!(sqlx::PgPool, sqlx::postgres::PgRow, crate::sql::postgres);
