//! Translation between engine values and Postgres rows, and of sqlx errors into
//! [`StoreError`]s a caller can act on.
//!
//! UUID and NUMERIC columns travel as text (`$1::uuid`, `col::text AS col`): the
//! workspace builds sqlx without its `uuid` and decimal features, and text is exact
//! for both.

use crate::sql::rows::Dialect;
use maily_engine::CampaignStats;
use maily_engine::ports::StoreError;
use sqlx::Row;
use sqlx::postgres::{PgDatabaseError, PgRow};
use std::fmt::Display;

pub(super) use crate::sql::rows::{is_kind, reason, stats_columns};

/// The SQLSTATE of a database error, if `e` is one.
pub(super) fn sqlstate(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .map(PgDatabaseError::code),
        _ => None,
    }
}

/// How Postgres' errors read, by SQLSTATE: class XX (internal errors, among them
/// data_corrupted and index_corrupted) means damage; connection trouble (class 08),
/// serialization failures and deadlocks (40), exhausted resources (53), a cancelled
/// statement or a shutting-down server (57) and a lock timeout (55P03) are worth
/// retrying; [`is_row_error`] tells rejected values.
const POSTGRES: Dialect = Dialect {
    integer: "a Postgres BIGINT",
    damaged: |e| sqlstate(e).is_some_and(|c| c.starts_with("XX")),
    transient: |e| {
        matches!(
            sqlstate(e).map(|c| c.get(..2).unwrap_or(c)),
            Some("08" | "40" | "53" | "57")
        ) || sqlstate(e) == Some("55P03")
    },
    rejects_row: is_row_error,
};

/// Whether retrying the operation later could succeed: connection, lock or resource
/// trouble (see [`POSTGRES`]), and pool or I/O failures.
pub(super) fn is_transient(e: &sqlx::Error) -> bool {
    POSTGRES.is_transient(e)
}

/// Whether `e` rejects the values of a row rather than the operation: a data
/// exception (class 22, e.g. a NUL byte in text, a malformed value, a number out of
/// range), an integrity constraint (class 23), or a value too large for an index
/// (54000, program_limit_exceeded). Another attempt with the same row fails the same
/// way; without the row it may succeed.
pub(super) fn is_row_error(e: &sqlx::Error) -> bool {
    matches!(
        sqlstate(e),
        Some(code) if code.starts_with("22") || code.starts_with("23") || code == "54000"
    )
}

/// Maps an error that has no better interpretation at the call site (see
/// [`Dialect::db_err`]).
pub(super) fn db_err(e: sqlx::Error) -> StoreError {
    POSTGRES.db_err(e)
}

/// Like [`db_err`], but a unique-key violation becomes a conflict described by `what`.
pub(super) fn unique_err(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    POSTGRES.unique_err(e, what)
}

/// Like [`db_err`], but an error rejecting the row's values (see [`is_row_error`])
/// becomes [`StoreError::InvalidRow`] naming `row`.
pub(super) fn row_err(e: sqlx::Error, row: impl FnOnce() -> String) -> StoreError {
    if is_row_error(&e) {
        StoreError::InvalidRow {
            row: row(),
            reason: reason(&e),
        }
    } else {
        db_err(e)
    }
}

/// Converts a u64 for a BIGINT column, refusing values Postgres cannot hold.
pub(super) fn to_i64(value: u64, row: impl Display, column: &str) -> Result<i64, StoreError> {
    POSTGRES.to_i64(value, row, column)
}

/// The counters of `stats` in [`CampaignStats::FIELDS`] order, ready to bind.
pub(super) fn stats_to_i64(
    stats: &CampaignStats,
    row: impl Display,
) -> Result<[i64; 12], StoreError> {
    POSTGRES.stats_to_i64(stats, row)
}

/// `$from, $from+1, ...`: `n` numbered placeholders, each followed by `cast`.
pub(super) fn placeholders(from: usize, n: usize, cast: &str) -> String {
    (from..from + n)
        .map(|i| format!("${i}{cast}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `col = EXCLUDED.col` for every stats column, for upserts.
pub(super) fn stats_updates() -> String {
    CampaignStats::FIELDS
        .iter()
        .map(|f| format!("{f} = EXCLUDED.{f}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A text or BIGINT key column for naming a row in an error, whatever it holds.
pub(super) fn raw_text(row: &PgRow, column: &str) -> String {
    row.try_get::<String, _>(column)
        .or_else(|_| row.try_get::<i64, _>(column).map(|n| n.to_string()))
        .unwrap_or_else(|_| "(unreadable key)".into())
}

/// Reads the columns of one PgRow, naming its table and key in every error.
pub(super) type RowReader<'r> = crate::row_reader::RowReader<'r, PgRow>;

/// API key scopes as bound: a `TEXT[]`.
pub(super) fn scopes_param(scopes: &[String]) -> Result<Vec<String>, String> {
    Ok(scopes.to_vec())
}

/// API key scopes as read from `column` (a `TEXT[]`).
pub(super) fn scopes_column(
    r: &crate::row_reader::RowReader<'_, PgRow>,
    column: &str,
) -> Result<Vec<String>, StoreError> {
    r.get(column)
}

/// How a write transaction begins (the default isolation).
pub(super) const BEGIN_WRITE: &str = "BEGIN";
/// How a read of several statements as one snapshot begins.
pub(super) const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// The store's own clock for bookkeeping columns (`created_at`, `updated_at`), which
/// are `TIMESTAMPTZ` here.
pub(super) const NOW: &str = "now()";

/// A bookkeeping time column (`TIMESTAMPTZ`) read as the engine's milliseconds.
pub(super) fn millis(column: &str) -> String {
    format!("floor(extract(epoch FROM {column}) * 1000)::bigint")
}

/// A statement that keeps other writers out of `table` until the transaction ends, for
/// a read that a following write must still agree with (a new ledger head chains onto
/// the one read). Here a `SHARE ROW EXCLUSIVE` table lock: it conflicts with itself
/// and with row writes, not with plain reads.
pub(super) fn lock_writers(table: &str) -> Option<String> {
    Some(format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
}

/// `column` matching any of `n` values bound from `$from` on with [`bind_all`], whose
/// type in Postgres is `pg_type`: here `= ANY`, one parameter for the values as an
/// array of that type.
pub(super) fn any_of(column: &str, from: usize, _n: usize, pg_type: &str) -> String {
    format!("{column} = ANY(${from}::{pg_type}[])")
}

/// Binds `values` for [`any_of`]: as one array.
pub(super) fn bind_all<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    values: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(values)
}

/// Values per [`any_of`] list: one array parameter takes any number, so this only
/// keeps each statement's result modest while large reads stay cheap.
pub(super) const ANY_OF_CHUNK: usize = 10_000;

/// Where `needle` first occurs in `haystack` (SQL expressions), counting characters
/// from 1, or 0 if nowhere: `strpos`.
pub(super) fn strpos(haystack: &str, needle: &str) -> String {
    format!("strpos({haystack}, {needle})")
}

/// What orders rows of `table` (a name or alias) created in the same instant: its `id`
/// key. Postgres keeps no insertion order a query can use, so such ties come in an
/// arbitrary but stable order.
pub(super) fn tiebreak(table: &str) -> String {
    format!("{table}.id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_integers_are_named_as_postgres_ones() {
        let err = to_i64(u64::MAX, "campaign c1", "delivered").unwrap_err();
        let expected = format!("delivered {} does not fit a Postgres BIGINT", u64::MAX);
        assert!(matches!(err, StoreError::InvalidRow { reason, .. } if reason == expected));
    }

    #[test]
    fn numbered_placeholders() {
        assert_eq!(placeholders(3, 2, "::uuid"), "$3::uuid, $4::uuid");
        assert!(stats_updates().starts_with("injected = EXCLUDED.injected, "));
        assert_eq!(any_of("id", 2, 3, "uuid"), "id = ANY($2::uuid[])");
    }

    #[test]
    fn pool_failures_are_neither_sqlstates_nor_rejected_rows() {
        assert!(sqlstate(&sqlx::Error::PoolTimedOut).is_none());
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_row_error(&sqlx::Error::PoolTimedOut));
    }
}
