//! SQL written once for SQLite and Postgres. A module here is a macro that the
//! backend modules (`crate::sqlite`, `crate::postgres`) expand with their pool and row
//! types, their `rows` helpers and [`postgres`] or [`sqlite`] for the placeholders:
//! statements are written with Postgres' numbered `$N`, which SQLite takes as `?N`
//! (the same numbered parameters). What differs beyond that stays in the backend.
//!
//! Statements hold no `$` or `::` inside string literals: the SQLite form rewrites
//! both wherever they stand.

use std::borrow::Cow;

pub(crate) mod analytics;
pub(crate) mod api_keys;
pub(crate) mod catalog;
pub(crate) mod contacts;
pub(crate) mod deferred;
pub(crate) mod domains;
pub(crate) mod leases;
pub(crate) mod ledger;
pub(crate) mod lifecycle;
pub(crate) mod messages;
pub(crate) mod migrate;
pub(crate) mod ports;
pub(crate) mod rows;
pub(crate) mod settlement;

/// A statement for Postgres: as written.
#[cfg(feature = "postgres")]
pub(crate) fn postgres(sql: &str) -> Cow<'_, str> {
    Cow::Borrowed(sql)
}

/// A statement for SQLite: `$N` placeholders as `?N`, Postgres' casts (`$2::uuid`,
/// `col::text`) dropped (SQLite keeps those values as text already), and so are the
/// row locks that end a `SELECT` (`FOR UPDATE`, `FOR SHARE`, `FOR KEY SHARE`): a
/// SQLite write transaction holds the database's write lock from its first statement.
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite(sql: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql.trim_end();
    for lock in ["FOR UPDATE", "FOR SHARE", "FOR KEY SHARE"] {
        if let Some(head) = rest.strip_suffix(lock) {
            rest = head.trim_end();
        }
    }
    while let Some(at) = rest.find("::") {
        out.push_str(&rest[..at]);
        rest = rest[at + 2..].trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
    }
    out.push_str(rest);
    Cow::Owned(out.replace('$', "?"))
}

/// `$from, $from+1, ...`: `n` numbered placeholders.
pub(crate) fn numbered(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(all(test, feature = "sqlite", feature = "postgres"))]
mod tests {
    #[test]
    fn sqlite_takes_the_same_numbered_parameters() {
        let sql = "UPDATE t SET a = $2, b = $10 WHERE id = $1";
        assert_eq!(
            super::sqlite(sql),
            "UPDATE t SET a = ?2, b = ?10 WHERE id = ?1"
        );
        assert_eq!(super::postgres(sql), sql);
    }

    #[test]
    fn sqlite_drops_casts_and_row_locks() {
        let sql = "SELECT id::text FROM t WHERE id = $1::uuid\n   FOR UPDATE";
        assert_eq!(super::sqlite(sql), "SELECT id FROM t WHERE id = ?1");
        assert_eq!(
            super::sqlite("SELECT 1 FROM t WHERE a = $1 FOR SHARE"),
            "SELECT 1 FROM t WHERE a = ?1"
        );
        assert_eq!(
            super::sqlite("SELECT a FROM t WHERE a = $1 FOR KEY SHARE"),
            "SELECT a FROM t WHERE a = ?1"
        );
    }
}
