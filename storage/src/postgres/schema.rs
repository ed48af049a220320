//! The Postgres schema a store lives in: naming, creating, and sweeping away the
//! throwaway ones of [`super::PostgresParams::temp`] that tests leave behind.

use super::rows::{db_err, sqlstate};
use maily_engine::ports::StoreError;
use sqlx::{Executor, PgPool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, info};

/// Prefix of throwaway schema names: `maily_tmp_<unix seconds>_<random hex>`.
const TEMP_PREFIX: &str = "maily_tmp_";

/// Throwaway schemas older than this are dropped by the next process connecting to
/// a throwaway schema. Nothing that uses one runs this long; the bench takes minutes.
const TEMP_MAX_AGE: Duration = Duration::from_secs(3600);

/// Whether this process has swept stale throwaway schemas already.
static SWEPT: AtomicBool = AtomicBool::new(false);

/// Checks that `name` is usable as a schema name as given: Postgres would silently
/// truncate a longer one, so two configured names could end up the same schema.
pub(super) fn validate(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > 63 || name.contains('\0') {
        return Err(StoreError::Unavailable(format!(
            "postgres schema name {name:?} must be 1-63 bytes without NUL"
        )));
    }
    Ok(())
}

/// `name` as a quoted identifier, safe to splice into SQL.
pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates schema `name` unless it exists.
pub(super) async fn create(pool: &PgPool, name: &str) -> Result<(), StoreError> {
    // Checking first keeps Postgres from sending an "already exists" notice on every
    // start.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(name)
            .fetch_one(pool)
            .await
            .map_err(db_err)?;
    if exists {
        return Ok(());
    }
    let created = pool
        .execute(format!("CREATE SCHEMA {}", quote(name)).as_str())
        .await;
    match created {
        Ok(_) => Ok(()),
        // A concurrent creator won: the loser fails on the catalog's unique index
        // (23505) or with duplicate_schema (42P06). Either way the schema now exists,
        // which is all that was asked.
        Err(e) if matches!(sqlstate(&e), Some("23505" | "42P06")) => Ok(()),
        Err(e) => Err(db_err(e)),
    }
}

/// A fresh throwaway schema name.
pub(super) fn temp_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // A random v4 UUID's bytes; six of them make collisions between concurrent
    // tests within the same second vanishingly unlikely.
    let random = maily_engine::MessageId::new();
    format!(
        "{TEMP_PREFIX}{secs}_{}",
        hex::encode(&random.as_bytes()[..6])
    )
}

/// Whether `name` is a throwaway schema name.
pub(super) fn is_temp(name: &str) -> bool {
    temp_created_at(name).is_some()
}

/// When the throwaway schema `name` was created, if it is one.
fn temp_created_at(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let (secs, _) = rest.split_once('_')?;
    secs.parse().ok()
}

/// Drops throwaway schemas older than [`TEMP_MAX_AGE`], once per process.
///
/// Tests cannot drop their own schema (a store has no async drop), so each run
/// cleans up after the earlier ones instead. Failures are only logged: another
/// process may be sweeping the same schemas at the same time.
pub(super) async fn sweep_stale_temps(pool: &PgPool) {
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let names: Vec<String> = match sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname::text, $1)",
    )
    .bind(TEMP_PREFIX)
    .fetch_all(pool)
    .await
    {
        Ok(names) => names,
        Err(e) => {
            debug!(error = %e, "listing throwaway schemas failed");
            return;
        }
    };
    let stale = names.into_iter().filter(|n| {
        temp_created_at(n).is_some_and(|t| now.saturating_sub(t) > TEMP_MAX_AGE.as_secs())
    });
    for name in stale {
        let dropped = pool
            .execute(format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(&name)).as_str())
            .await;
        match dropped {
            Ok(_) => info!(schema = %name, "dropped stale throwaway schema"),
            Err(e) => debug!(schema = %name, error = %e, "dropping throwaway schema failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("t_1"), "\"t_1\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn names_postgres_would_truncate_are_refused() {
        assert!(validate(&"x".repeat(63)).is_ok());
        assert!(validate(&"x".repeat(64)).is_err());
        assert!(validate("").is_err());
        assert!(validate("a\0b").is_err());
    }

    #[test]
    fn temp_names_carry_their_creation_time() {
        let name = temp_name();
        assert!(name.len() <= 63, "{name}");
        let created = temp_created_at(&name).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now - created < 5);
        assert_eq!(temp_created_at("maily_tmp_12_ab"), Some(12));
        assert_eq!(temp_created_at("public"), None);
        assert_eq!(temp_created_at("maily_tmp_x_ab"), None);
    }
}
