//! SQL written once for SQLite and Postgres. A module here is a macro that the
//! backend modules (`crate::sqlite`, `crate::postgres`) expand with their pool and row
//! types, their `rows` helpers and [`postgres`] or [`sqlite`] for the placeholders:
//! statements are written with Postgres' numbered `$N`, which SQLite takes as `?N`
//! (the same numbered parameters). What differs beyond that stays in the backend.

use std::borrow::Cow;

pub(crate) mod api_keys;
pub(crate) mod domains;

/// A statement for Postgres: as written.
pub(crate) fn postgres(sql: &str) -> Cow<'_, str> {
    Cow::Borrowed(sql)
}

/// A statement for SQLite: `$N` placeholders as `?N`.
pub(crate) fn sqlite(sql: &str) -> Cow<'_, str> {
    Cow::Owned(sql.replace('$', "?"))
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
