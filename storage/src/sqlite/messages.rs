//! Message states on SQLite: the shared SQL of [`crate::sql::messages`].

crate::sql::messages::messages!(sqlx::SqlitePool, crate::sql::sqlite);
