//! Message states on Postgres: the shared SQL of [`crate::sql::messages`].

crate::sql::messages::messages!(sqlx::PgPool, crate::sql::postgres);
