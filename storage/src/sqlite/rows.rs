//! Translation between engine values and SQLite rows, and of sqlx errors into
//! [`StoreError`]s a caller can act on.

use crate::sql::rows::Dialect;
use maily_engine::CampaignStats;
use maily_engine::ports::StoreError;
use sqlx::Row;
use sqlx::error::ErrorKind;
use sqlx::sqlite::SqliteRow;
use std::fmt::Display;

pub(super) use crate::sql::rows::{is_kind, stats_columns};

// Primary result codes (the low byte of SQLite's extended codes) that mean the
// database file itself is damaged rather than busy or unreachable.
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_NOTADB: i32 = 26;
// Codes that mean another connection holds a lock past the busy timeout.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

/// The primary result code of a database error, if `e` is one.
fn primary_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(db) => db.code()?.parse::<i32>().ok().map(|c| c & 0xff),
        _ => None,
    }
}

/// How SQLite's errors read: result codes tell damage and locks, and only a constraint
/// (foreign key, `NOT NULL`, `CHECK`) rejects a row's values, SQLite storing whatever
/// it is given otherwise.
const SQLITE: Dialect = Dialect {
    integer: "a 63-bit SQLite integer",
    damaged: |e| matches!(primary_code(e), Some(SQLITE_CORRUPT | SQLITE_NOTADB)),
    transient: |e| matches!(primary_code(e), Some(SQLITE_BUSY | SQLITE_LOCKED)),
    rejects_row: |e| {
        [
            ErrorKind::ForeignKeyViolation,
            ErrorKind::NotNullViolation,
            ErrorKind::CheckViolation,
        ]
        .into_iter()
        .any(|kind| is_kind(e, kind))
    },
};

/// Whether retrying the operation later could succeed (locks, I/O, pool trouble).
pub(super) fn is_transient(e: &sqlx::Error) -> bool {
    SQLITE.is_transient(e)
}

/// Maps an error that has no better interpretation at the call site (see
/// [`Dialect::db_err`]).
pub(super) fn db_err(e: sqlx::Error) -> StoreError {
    SQLITE.db_err(e)
}

/// Like [`db_err`], but a unique-key violation becomes a conflict described by `what`.
pub(super) fn unique_err(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    SQLITE.unique_err(e, what)
}

/// Converts a u64 for an INTEGER column, refusing values SQLite cannot hold.
pub(super) fn to_i64(value: u64, row: impl Display, column: &str) -> Result<i64, StoreError> {
    SQLITE.to_i64(value, row, column)
}

/// The counters of `stats` in [`CampaignStats::FIELDS`] order, ready to bind.
pub(super) fn stats_to_i64(
    stats: &CampaignStats,
    row: impl Display,
) -> Result<[i64; 12], StoreError> {
    SQLITE.stats_to_i64(stats, row)
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

/// The store's own clock for bookkeeping columns (`created_at`, `updated_at`), which
/// hold milliseconds since the Unix epoch here. The Julian day is a float a little
/// off whole milliseconds either way, hence the rounding before the cast.
pub(super) const NOW: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)";

/// A bookkeeping time column read as the engine's milliseconds: as stored.
pub(super) fn millis(column: &str) -> String {
    column.to_string()
}

/// A statement that keeps other writers out of `table` until the transaction ends, for
/// a read that a following write must still agree with: none here, a [`BEGIN_WRITE`]
/// transaction holding the database's write lock from its first statement already.
pub(super) fn lock_writers(_table: &str) -> Option<String> {
    None
}

/// `column` matching any of `n` values bound from `$from` on with [`bind_all`]
/// (`pg_type` is their type in Postgres): here an `IN` list, one parameter per value,
/// numbered `$N` like every shared statement for [`crate::sql::sqlite`] to rewrite.
pub(super) fn any_of(column: &str, from: usize, n: usize, _pg_type: &str) -> String {
    format!("{column} IN ({})", crate::sql::numbered(from, n))
}

/// Binds `values` for [`any_of`]: one parameter each.
pub(super) fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    values: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for v in values {
        q = q.bind(v.as_str());
    }
    q
}

/// Values per [`any_of`] list, one bound parameter each: SQLite builds before 3.32
/// allow only 999 per statement.
pub(super) const ANY_OF_CHUNK: usize = 500;
const _: () = assert!(ANY_OF_CHUNK < 999);

/// Where `needle` first occurs in `haystack` (SQL expressions), counting characters
/// from 1, or 0 if nowhere: `instr`.
pub(super) fn strpos(haystack: &str, needle: &str) -> String {
    format!("instr({haystack}, {needle})")
}

/// What orders rows of `table` (a name or alias) created in the same millisecond: its
/// rowid, which grows with each insert into a table whose rows are never deleted, so
/// such ties come in the order the rows were stored.
pub(super) fn tiebreak(table: &str) -> String {
    format!("{table}.rowid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_integers_are_named_as_sqlite_ones() {
        let err = to_i64(u64::MAX, "campaign c1", "delivered").unwrap_err();
        let expected = format!(
            "delivered {} does not fit a 63-bit SQLite integer",
            u64::MAX
        );
        assert!(matches!(err, StoreError::InvalidRow { reason, .. } if reason == expected));
    }

    #[test]
    fn placeholder_lists() {
        assert_eq!(placeholders(3), "?, ?, ?");
        assert_eq!(any_of("id", 2, 3, "uuid"), "id IN ($2, $3, $4)");
    }

    #[tokio::test]
    async fn the_store_clock_reads_as_the_engine_clock() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let before = maily_engine::Timestamp::now().0;
        let at: i64 = sqlx::query_scalar(&format!("SELECT {NOW}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        let after = maily_engine::Timestamp::now().0;
        assert!(
            (before..=after).contains(&at),
            "{at} outside [{before}, {after}]"
        );
    }
}
