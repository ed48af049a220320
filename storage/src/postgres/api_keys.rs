//! API keys: stored with a hash of their secret, listed per tenant, revoked, touched.

use super::rows::{RowReader, db_err, is_kind, raw_text, row_err};
use maily_engine::ports::{ApiKeyRecord, NewApiKey, StoreError};
use maily_engine::{TenantId, Timestamp};
use sqlx::PgPool;
use sqlx::error::ErrorKind;
use sqlx::postgres::PgRow;

const SELECT_KEY: &str = "SELECT id, tenant, name, scopes, secret_hash, created_at, \
     last_used_at, revoked_at, issued_by FROM api_keys";

fn key_row(row: &PgRow) -> Result<ApiKeyRecord, StoreError> {
    let r = RowReader::new(row, "api_keys", raw_text(row, "id"));
    Ok(ApiKeyRecord {
        id: r.get("id")?,
        tenant: r.tenant("tenant")?,
        name: r.get("name")?,
        scopes: r.get("scopes")?,
        secret_hash: r.hash("secret_hash")?,
        created_at: Timestamp(r.get("created_at")?),
        last_used_at: r.get::<Option<i64>>("last_used_at")?.map(Timestamp),
        revoked_at: r.get::<Option<i64>>("revoked_at")?.map(Timestamp),
        issued_by: r.get("issued_by")?,
    })
}

pub(super) async fn create_api_key(pool: &PgPool, key: &NewApiKey) -> Result<(), StoreError> {
    let row = || format!("api key {}", key.id);
    sqlx::query(
        "INSERT INTO api_keys (id, tenant, name, scopes, secret_hash, created_at, issued_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key.id)
    .bind(key.tenant.as_str())
    .bind(&key.name)
    .bind(&key.scopes)
    .bind(key.secret_hash.as_slice())
    .bind(key.created_at.0)
    .bind(key.issued_by.as_deref())
    .execute(pool)
    .await
    .map_err(|e| {
        if is_kind(&e, ErrorKind::UniqueViolation) {
            StoreError::Conflict(format!("api key {} already exists", key.id))
        } else if is_kind(&e, ErrorKind::ForeignKeyViolation) {
            StoreError::InvalidRow {
                row: row(),
                reason: format!("tenant {} does not exist", key.tenant),
            }
        } else {
            // e.g. a NUL character in the name or a scope, which Postgres text cannot
            // hold.
            row_err(e, row)
        }
    })?;
    Ok(())
}

pub(super) async fn api_key(pool: &PgPool, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
    let row = sqlx::query(&format!("{SELECT_KEY} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(key_row).transpose()
}

pub(super) async fn api_keys(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "{SELECT_KEY} WHERE tenant = $1 ORDER BY created_at, id"
    ))
    .bind(tenant.as_str())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(key_row).collect()
}

pub(super) async fn revoke_api_key(
    pool: &PgPool,
    tenant: &TenantId,
    id: &str,
    at: Timestamp,
) -> Result<bool, StoreError> {
    // The tenant is part of the key: another tenant's key matches no row. The keys it
    // issued, and theirs, go with it.
    let done = sqlx::query(
        "WITH RECURSIVE lineage(id) AS (
             SELECT id FROM api_keys WHERE id = $2 AND tenant = $3
             UNION
             SELECT k.id FROM api_keys k JOIN lineage l ON k.issued_by = l.id
              WHERE k.tenant = $3
         )
         UPDATE api_keys SET revoked_at = coalesce(revoked_at, $1)
          WHERE tenant = $3 AND id IN (SELECT id FROM lineage)",
    )
    .bind(at.0)
    .bind(id)
    .bind(tenant.as_str())
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn touch_api_key(
    pool: &PgPool,
    id: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = $1
         WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
    )
    .bind(at.0)
    .bind(id)
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(())
}
