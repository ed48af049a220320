//! Settled reward epochs on Postgres: the shared SQL of [`crate::sql::settlement`].

crate::sql::settlement::settlement!(sqlx::PgPool, crate::sql::postgres);
