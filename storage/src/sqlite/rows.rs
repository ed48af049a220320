//! Translation between engine values and SQLite rows, and of sqlx errors into
//! [`StoreError`]s a caller can act on.

use maily_engine::CampaignStats;
use maily_engine::ports::StoreError;
use sqlx::Row;
use sqlx::error::ErrorKind;
use sqlx::sqlite::SqliteRow;
use std::fmt::Display;

// Primary result codes (the low byte of SQLite's extended codes) that mean the
// database file itself is damaged rather than busy or unreachable.
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_NOTADB: i32 = 26;
// Codes that mean another connection holds a lock past the busy timeout.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

fn primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i32> {
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .map(|c| c & 0xff)
}

/// Whether retrying the operation later could succeed (locks, I/O, pool trouble).
pub(super) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(primary_code(db.as_ref()), Some(SQLITE_BUSY | SQLITE_LOCKED))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Maps an error that has no better interpretation at the call site.
///
/// Constraint violations here are unexpected (the callers that can cause them map
/// them with context first), so they are reported as the row being rejected.
pub(super) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            if matches!(
                primary_code(db.as_ref()),
                Some(SQLITE_CORRUPT | SQLITE_NOTADB)
            ) {
                return StoreError::Corrupt(db.message().to_string());
            }
            match db.kind() {
                ErrorKind::UniqueViolation => StoreError::Conflict(db.message().to_string()),
                ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation => StoreError::InvalidRow {
                    row: "(unknown)".into(),
                    reason: db.message().to_string(),
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

/// Whether `e` is a database error of the given kind.
pub(super) fn is_kind(e: &sqlx::Error, kind: ErrorKind) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == kind)
}

/// Converts a u64 for an INTEGER column, refusing values SQLite cannot hold.
pub(super) fn to_i64(value: u64, row: impl Display, column: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidRow {
        row: row.to_string(),
        reason: format!("{column} {value} does not fit a 63-bit SQLite integer"),
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

/// `n` comma-separated `?` placeholders.
pub(super) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A text column for naming a row in an error, whatever the column holds.
pub(super) fn raw_text(row: &SqliteRow, column: &str) -> String {
    row.try_get::<String, _>(column)
        .unwrap_or_else(|_| "(unreadable key)".into())
}

/// Reads the columns of one SqliteRow, naming its table and key in every error.
pub(super) type RowReader<'r> = crate::row_reader::RowReader<'r, SqliteRow>;

/// Like [`db_err`]: SQLite stores whatever text it is given, so no error rejects a
/// row's values the way Postgres' do (the row is named there only).
pub(super) fn row_err(e: sqlx::Error, _row: impl FnOnce() -> String) -> StoreError {
    db_err(e)
}

/// API key scopes as bound: a JSON array of names in one TEXT column.
pub(super) fn scopes_param(scopes: &[String]) -> Result<String, String> {
    serde_json::to_string(scopes).map_err(|e| format!("scopes do not serialise: {e}"))
}

/// API key scopes as read from `column` (a JSON array of names).
pub(super) fn scopes_column(
    r: &crate::row_reader::RowReader<'_, SqliteRow>,
    column: &str,
) -> Result<Vec<String>, StoreError> {
    let json: String = r.get(column)?;
    serde_json::from_str(&json)
        .map_err(|e| r.corrupt(column, format!("not a JSON array of names: {e}")))
}

/// How a write transaction begins: holding the write lock from its first read, so
/// what it read cannot change before it commits.
pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
/// How a read of several statements as one snapshot begins (a read transaction is
/// one in SQLite's WAL mode).
pub(super) const BEGIN_SNAPSHOT: &str = "BEGIN";

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
                reason: format!(
                    "delivered {} does not fit a 63-bit SQLite integer",
                    u64::MAX
                ),
            }
        );
        assert_eq!(to_i64(i64::MAX as u64, "r", "c").unwrap(), i64::MAX);
    }

    #[test]
    fn placeholder_lists() {
        assert_eq!(placeholders(3), "?, ?, ?");
        assert!(stats_columns().starts_with("injected, delivered"));
    }

    #[test]
    fn pool_failures_are_unavailable() {
        assert!(matches!(
            db_err(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            db_err(sqlx::Error::ColumnNotFound("x".into())),
            StoreError::Corrupt(_)
        ));
    }
}
