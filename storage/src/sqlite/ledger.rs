//! The anchor ledger, chain anchors, Merkle proofs and chain submissions on SQLite: the
//! shared SQL of [`crate::sql::ledger`].

crate::sql::ledger::ledger!(
    sqlx::SqlitePool,
    sqlx::SqliteConnection,
    sqlx::sqlite::SqliteRow,
    crate::sql::sqlite
);
