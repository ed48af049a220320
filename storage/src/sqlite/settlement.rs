//! Settled reward epochs on SQLite: the shared SQL of [`crate::sql::settlement`].

crate::sql::settlement::settlement!(sqlx::SqlitePool, crate::sql::sqlite);
