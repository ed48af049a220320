//! Translation between engine values and Postgres rows, and of sqlx errors into
//! [`StoreError`]s a caller can act on.
//!
//! UUID and NUMERIC columns travel as text (`$1::uuid`, `col::text AS col`): the
//! workspace builds sqlx without its `uuid` and decimal features, and text is exact
//! for both.

use maily_engine::CampaignStats;
use maily_engine::ports::StoreError;
use sqlx::Row;
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgDatabaseError, PgRow};
use std::fmt::Display;

/// The SQLSTATE of a database error, if `e` is one.
pub(super) fn sqlstate(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .map(PgDatabaseError::code),
        _ => None,
    }
}

/// Whether retrying the operation later could succeed: connection trouble (class
/// 08), serialization failures and deadlocks (40), exhausted resources (53), a
/// cancelled statement or a shutting-down server (57), a lock timeout (55P03), and
/// pool or I/O failures.
pub(super) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(_) => {
            matches!(
                sqlstate(e).map(|c| c.get(..2).unwrap_or(c)),
                Some("08" | "40" | "53" | "57")
            ) || sqlstate(e) == Some("55P03")
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
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

/// Maps an error that has no better interpretation at the call site.
///
/// Constraint violations and data exceptions here are unexpected (the callers that
/// can cause them map them with context first), so they are reported as the row being
/// rejected.
pub(super) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            // Class XX: internal errors, among them data_corrupted and index_corrupted.
            if sqlstate(&e).is_some_and(|c| c.starts_with("XX")) {
                return StoreError::Corrupt(db.message().to_string());
            }
            if is_transient(&e) {
                return StoreError::Unavailable(e.to_string());
            }
            match db.kind() {
                ErrorKind::UniqueViolation => StoreError::Conflict(db.message().to_string()),
                _ if is_row_error(&e) => StoreError::InvalidRow {
                    row: "(unknown)".into(),
                    reason: reason(&e),
                },
                _ => StoreError::Unavailable(e.to_string()),
            }
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
        // Pool timeouts, closed pools, I/O and worker failures: retrying later may work.
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Like [`db_err`], but a unique-key violation becomes a conflict described by `what`.
pub(super) fn unique_err(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    if is_kind(&e, ErrorKind::UniqueViolation) {
        StoreError::Conflict(what())
    } else {
        db_err(e)
    }
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

/// What the database said about `e`, without sqlx's framing.
pub(super) fn reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

/// Whether `e` is a database error of the given kind.
pub(super) fn is_kind(e: &sqlx::Error, kind: ErrorKind) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == kind)
}

/// Converts a u64 for a BIGINT column, refusing values Postgres cannot hold.
pub(super) fn to_i64(value: u64, row: impl Display, column: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidRow {
        row: row.to_string(),
        reason: format!("{column} {value} does not fit a Postgres BIGINT"),
    })
}

/// The counters of `stats` in [`CampaignStats::FIELDS`] order, ready to bind.
pub(super) fn stats_to_i64(
    stats: &CampaignStats,
    row: impl Display,
) -> Result<[i64; 12], StoreError> {
    let values = stats.to_array();
    let mut out = [0i64; 12];
    for (i, v) in values.into_iter().enumerate() {
        out[i] = to_i64(v, &row, CampaignStats::FIELDS[i])?;
    }
    Ok(out)
}

/// A comma-separated list of the stats columns, in [`CampaignStats::FIELDS`] order.
pub(super) fn stats_columns() -> String {
    CampaignStats::FIELDS.join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_counters_are_refused_with_the_row_named() {
        let err = to_i64(u64::MAX, "campaign c1", "delivered").unwrap_err();
        assert_eq!(
            err,
            StoreError::InvalidRow {
                row: "campaign c1".into(),
                reason: format!("delivered {} does not fit a Postgres BIGINT", u64::MAX),
            }
        );
        assert_eq!(to_i64(i64::MAX as u64, "r", "c").unwrap(), i64::MAX);
    }

    #[test]
    fn numbered_placeholders() {
        assert_eq!(placeholders(3, 2, "::uuid"), "$3::uuid, $4::uuid");
        assert!(stats_columns().starts_with("injected, delivered"));
        assert!(stats_updates().starts_with("injected = EXCLUDED.injected, "));
    }

    #[test]
    fn pool_failures_are_unavailable() {
        assert!(matches!(
            db_err(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_row_error(&sqlx::Error::PoolTimedOut));
        assert!(matches!(
            db_err(sqlx::Error::ColumnNotFound("x".into())),
            StoreError::Corrupt(_)
        ));
    }
}
