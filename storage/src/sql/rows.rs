//! Row and error helpers whose logic both backends share. Only what a backend's error
//! codes mean, and how its errors name its integers, differ: each backend describes
//! those in a [`Dialect`] and binds the helpers to it in its own `rows`, under the
//! names the shared SQL imports (`db_err`, `to_i64`, ...).

use maily_engine::CampaignStats;
use maily_engine::ports::StoreError;
use sqlx::error::ErrorKind;
use std::fmt::Display;

/// What the shared helpers need to know of a backend. The code hooks are asked about
/// database errors only (`sqlx::Error::Database`).
pub(crate) struct Dialect {
    /// The widest integer column, as a refused value names it after "does not fit"
    /// (`a Postgres BIGINT`).
    pub integer: &'static str,
    /// Whether the code says the database itself is damaged.
    pub damaged: fn(&sqlx::Error) -> bool,
    /// Whether the code says retrying later could succeed (locks, connection trouble).
    pub transient: fn(&sqlx::Error) -> bool,
    /// Whether the code says the values of a row were rejected rather than the
    /// operation, so that the same row fails the same way again.
    pub rejects_row: fn(&sqlx::Error) -> bool,
}

impl Dialect {
    /// Whether retrying the operation later could succeed: what
    /// [`transient`](Self::transient) says of a database error, and pool or I/O trouble.
    pub(crate) fn is_transient(&self, e: &sqlx::Error) -> bool {
        match e {
            sqlx::Error::Database(_) => (self.transient)(e),
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            _ => false,
        }
    }

    /// Maps an error that has no better interpretation at the call site.
    ///
    /// Constraint violations and rejected values here are unexpected (the callers that
    /// can cause them map them with context first), so they are reported as the row
    /// being rejected, with no row to name.
    pub(crate) fn db_err(&self, e: sqlx::Error) -> StoreError {
        match &e {
            sqlx::Error::Database(db) => {
                if (self.damaged)(&e) {
                    return StoreError::Corrupt(db.message().to_string());
                }
                if (self.transient)(&e) {
                    return StoreError::Unavailable(e.to_string());
                }
                match db.kind() {
                    ErrorKind::UniqueViolation => StoreError::Conflict(db.message().to_string()),
                    _ if (self.rejects_row)(&e) => StoreError::InvalidRow {
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

    /// Like [`db_err`](Self::db_err), but a unique-key violation becomes a conflict
    /// described by `what`.
    pub(crate) fn unique_err(&self, e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
        if is_kind(&e, ErrorKind::UniqueViolation) {
            StoreError::Conflict(what())
        } else {
            self.db_err(e)
        }
    }

    /// Converts a u64 for the widest integer column, refusing values it cannot hold
    /// with `row` and `column` named.
    pub(crate) fn to_i64(
        &self,
        value: u64,
        row: impl Display,
        column: &str,
    ) -> Result<i64, StoreError> {
        i64::try_from(value).map_err(|_| StoreError::InvalidRow {
            row: row.to_string(),
            reason: format!("{column} {value} does not fit {}", self.integer),
        })
    }

    /// The counters of `stats` in [`CampaignStats::FIELDS`] order, ready to bind.
    pub(crate) fn stats_to_i64(
        &self,
        stats: &CampaignStats,
        row: impl Display,
    ) -> Result<[i64; 12], StoreError> {
        let values = stats.to_array();
        let mut out = [0i64; 12];
        for (i, v) in values.into_iter().enumerate() {
            out[i] = self.to_i64(v, &row, CampaignStats::FIELDS[i])?;
        }
        Ok(out)
    }
}

/// What the database said about `e`, without sqlx's framing.
pub(crate) fn reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

/// How inserting a tenant's row fails: a duplicate key is a conflict `duplicate`
/// describes, a tenant that does not exist makes `row` invalid, and anything else is
/// what `other` makes of the error.
pub(crate) fn insert_err(
    e: sqlx::Error,
    row: impl FnOnce() -> String,
    tenant: &dyn Display,
    duplicate: impl FnOnce() -> String,
    other: impl FnOnce(sqlx::Error) -> StoreError,
) -> StoreError {
    if is_kind(&e, ErrorKind::UniqueViolation) {
        StoreError::Conflict(duplicate())
    } else if is_kind(&e, ErrorKind::ForeignKeyViolation) {
        StoreError::InvalidRow {
            row: row(),
            reason: format!("tenant {tenant} does not exist"),
        }
    } else {
        other(e)
    }
}

/// Whether `e` is a database error of the given kind.
pub(crate) fn is_kind(e: &sqlx::Error, kind: ErrorKind) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == kind)
}

/// A comma-separated list of the stats columns, in [`CampaignStats::FIELDS`] order.
pub(crate) fn stats_columns() -> String {
    CampaignStats::FIELDS.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose codes mean nothing in particular.
    const PLAIN: Dialect = Dialect {
        integer: "a test integer",
        damaged: |_| false,
        transient: |_| false,
        rejects_row: |_| false,
    };

    #[test]
    fn oversized_counters_are_refused_with_the_row_named() {
        let err = PLAIN
            .to_i64(u64::MAX, "campaign c1", "delivered")
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::InvalidRow {
                row: "campaign c1".into(),
                reason: format!("delivered {} does not fit a test integer", u64::MAX),
            }
        );
        assert_eq!(PLAIN.to_i64(i64::MAX as u64, "r", "c").unwrap(), i64::MAX);
        let stats = CampaignStats::from_array(std::array::from_fn(|i| i as u64));
        let row = PLAIN.stats_to_i64(&stats, "r").unwrap();
        assert_eq!(row, std::array::from_fn(|i| i as i64));
    }

    #[test]
    fn pool_and_column_failures() {
        assert!(matches!(
            PLAIN.db_err(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(PLAIN.is_transient(&sqlx::Error::PoolTimedOut));
        assert!(matches!(
            PLAIN.db_err(sqlx::Error::ColumnNotFound("x".into())),
            StoreError::Corrupt(_)
        ));
        assert!(!PLAIN.is_transient(&sqlx::Error::ColumnNotFound("x".into())));
        assert!(matches!(
            PLAIN.unique_err(sqlx::Error::PoolClosed, || "taken".into()),
            StoreError::Unavailable(_)
        ));
        assert_eq!(
            reason(&sqlx::Error::PoolClosed),
            sqlx::Error::PoolClosed.to_string()
        );
    }

    #[test]
    fn stats_columns_follow_the_fields() {
        assert!(stats_columns().starts_with("injected, delivered"));
        assert_eq!(
            stats_columns().split(", ").count(),
            CampaignStats::FIELDS.len()
        );
    }
}
