//! The anchor ledger, chain anchors, Merkle proofs and chain submissions on Postgres:
//! the shared SQL of [`crate::sql::ledger`].

crate::sql::ledger::ledger!(
    sqlx::PgPool,
    sqlx::PgConnection,
    sqlx::postgres::PgRow,
    crate::sql::postgres
);
