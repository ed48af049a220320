//! SQL written once for SQLite and Postgres. A module here is a macro that the
//! backend modules (`crate::sqlite`, `crate::postgres`) expand with their pool and row
//! types, their `rows` helpers and [`postgres`] or [`sqlite`] for the placeholders:
//! statements are written with Postgres' numbered `$N`, which SQLite takes as `?N`
//! (the same numbered parameters). What differs beyond that stays in the backend.

use std::borrow::Cow;

pub(crate) mod api_keys;
pub(crate) mod domains;
pub(crate) mod messages;
pub(crate) mod settlement;

/// A statement for Postgres: as written.
pub(crate) fn postgres(sql: &str) -> Cow<'_, str> {
    Cow::Borrowed(sql)
}

/// A statement for SQLite: `$N` placeholders as `?N`, and Postgres' casts
/// (`$2::uuid`, `col::text`) dropped: SQLite keeps those values as text already.
pub(crate) fn sqlite(sql: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
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

#[cfg(test)]
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
}
