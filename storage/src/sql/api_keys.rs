//! API keys, one SQL text for both dialects: stored with a hash of their secret,
//! listed per tenant, revoked with the keys they issued, touched.

/// The API-key functions for one backend (see [`super::domains::domains`] for the
/// parameters). Its `rows` also tells how scopes are stored (`scopes_param`,
/// `scopes_column`: a JSON array in SQLite, a `TEXT[]` in Postgres) and which errors
/// reject a row's values (`row_err`).
macro_rules! api_keys {
    ($pool:ty, $row:ty, $sql:path) => {
        use crate::sql::rows::insert_err;
        use super::rows::{
            RowReader, db_err, raw_text, row_err, scopes_column, scopes_param,
        };
        use maily_engine::ports::{ApiKeyRecord, NewApiKey, StoreError};
        use maily_engine::{TenantId, Timestamp};

        const SELECT_KEY: &str = "SELECT id, tenant, name, scopes, secret_hash, created_at, \
             last_used_at, revoked_at, issued_by FROM api_keys";

        fn key_row(row: &$row) -> Result<ApiKeyRecord, StoreError> {
            let r = RowReader::new(row, "api_keys", raw_text(row, "id"));
            Ok(ApiKeyRecord {
                id: r.get("id")?,
                tenant: r.tenant("tenant")?,
                name: r.get("name")?,
                scopes: scopes_column(&r, "scopes")?,
                secret_hash: r.hash("secret_hash")?,
                created_at: Timestamp(r.get("created_at")?),
                last_used_at: r.get::<Option<i64>>("last_used_at")?.map(Timestamp),
                revoked_at: r.get::<Option<i64>>("revoked_at")?.map(Timestamp),
                issued_by: r.get("issued_by")?,
            })
        }

        pub(crate) async fn create_api_key(
            pool: &$pool,
            key: &NewApiKey,
        ) -> Result<(), StoreError> {
            let row = || format!("api key {}", key.id);
            let scopes = scopes_param(&key.scopes).map_err(|reason| StoreError::InvalidRow {
                row: row(),
                reason,
            })?;
            sqlx::query(&$sql(
                "INSERT INTO api_keys (id, tenant, name, scopes, secret_hash, created_at, issued_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            ))
            .bind(&key.id)
            .bind(key.tenant.as_str())
            .bind(&key.name)
            .bind(scopes)
            .bind(key.secret_hash.as_slice())
            .bind(key.created_at.0)
            .bind(key.issued_by.as_deref())
            .execute(pool)
            .await
            .map_err(|e| {
                // Else e.g. a NUL character in the name or a scope, which Postgres text
                // cannot hold.
                insert_err(
                    e,
                    row,
                    &key.tenant,
                    || format!("api key {} already exists", key.id),
                    |e| row_err(e, row),
                )
            })?;
            Ok(())
        }

        pub(crate) async fn api_key(
            pool: &$pool,
            id: &str,
        ) -> Result<Option<ApiKeyRecord>, StoreError> {
            let row = sqlx::query(&$sql(&format!("{SELECT_KEY} WHERE id = $1")))
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            row.as_ref().map(key_row).transpose()
        }

        pub(crate) async fn api_keys(
            pool: &$pool,
            tenant: &TenantId,
        ) -> Result<Vec<ApiKeyRecord>, StoreError> {
            let rows = sqlx::query(&$sql(&format!(
                "{SELECT_KEY} WHERE tenant = $1 ORDER BY created_at, id"
            )))
            .bind(tenant.as_str())
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter().map(key_row).collect()
        }

        pub(crate) async fn revoke_api_key(
            pool: &$pool,
            tenant: &TenantId,
            id: &str,
            at: Timestamp,
        ) -> Result<bool, StoreError> {
            // The tenant is part of the key: another tenant's key matches no row. The keys it
            // issued, and theirs, go with it.
            let done = sqlx::query(&$sql(
                "WITH RECURSIVE lineage(id) AS (
                     SELECT id FROM api_keys WHERE id = $2 AND tenant = $3
                     UNION
                     SELECT k.id FROM api_keys k JOIN lineage l ON k.issued_by = l.id
                      WHERE k.tenant = $3
                 )
                 UPDATE api_keys SET revoked_at = coalesce(revoked_at, $1)
                  WHERE tenant = $3 AND id IN (SELECT id FROM lineage)",
            ))
            .bind(at.0)
            .bind(id)
            .bind(tenant.as_str())
            .execute(pool)
            .await
            .map_err(db_err)?;
            Ok(done.rows_affected() > 0)
        }

        pub(crate) async fn touch_api_key(
            pool: &$pool,
            id: &str,
            at: Timestamp,
        ) -> Result<(), StoreError> {
            sqlx::query(&$sql(
                "UPDATE api_keys SET last_used_at = $1
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            ))
            .bind(at.0)
            .bind(id)
            .execute(pool)
            .await
            .map_err(db_err)?;
            Ok(())
        }
    };
}

pub(crate) use api_keys;
