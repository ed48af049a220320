//! Tenants' sending domains, one SQL text for both dialects: registered once (a
//! domain belongs to one tenant), verified, listed, removed.

/// The sending-domain functions for one backend: `$pool` and `$row` are its pool and
/// row types, `$sql` turns a statement written with `$N` placeholders into the
/// dialect's (see [`super::postgres`], [`super::sqlite`]). The backend module that
/// expands it provides `rows` (`RowReader`, `db_err`, `is_kind`, `raw_text`).
macro_rules! domains {
    ($pool:ty, $row:ty, $sql:path) => {
        use crate::sql::rows::insert_err;
        use super::rows::{RowReader, db_err, raw_text};
        use maily_engine::ports::{DomainKey, StoreError, TenantDomain};
        use maily_engine::{Domain, TenantId, Timestamp};

        const SELECT_DOMAIN: &str = "SELECT domain, tenant, token, created_at, verified_at, \
             dkim_selector, dkim_algorithm, dkim_key, dkim_record, return_path, tracking_host \
             FROM tenant_domains";

        fn domain_row(row: &$row) -> Result<TenantDomain, StoreError> {
            let r = RowReader::new(row, "tenant_domains", raw_text(row, "domain"));
            Ok(TenantDomain {
                domain: r.parse("domain")?,
                tenant: r.tenant("tenant")?,
                token: r.get("token")?,
                created_at: Timestamp(r.get("created_at")?),
                verified_at: r.get::<Option<i64>>("verified_at")?.map(Timestamp),
                dkim: match r.get::<Option<String>>("dkim_selector")? {
                    Some(selector) => Some(DomainKey {
                        selector,
                        algorithm: r.get("dkim_algorithm")?,
                        private_key: r.get("dkim_key")?,
                        dns_record: r.get("dkim_record")?,
                    }),
                    None => None,
                },
                return_path: match r.get::<Option<String>>("return_path")? {
                    Some(_) => Some(r.parse("return_path")?),
                    None => None,
                },
                tracking_host: match r.get::<Option<String>>("tracking_host")? {
                    Some(_) => Some(r.parse("tracking_host")?),
                    None => None,
                },
            })
        }

        pub(crate) async fn add_domain(pool: &$pool, d: &TenantDomain) -> Result<(), StoreError> {
            sqlx::query(&$sql(
                "INSERT INTO tenant_domains (domain, tenant, token, created_at, verified_at,
                     dkim_selector, dkim_algorithm, dkim_key, dkim_record, return_path,
                     tracking_host)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            ))
            .bind(d.domain.as_str())
            .bind(d.tenant.as_str())
            .bind(&d.token)
            .bind(d.created_at.0)
            .bind(d.verified_at.map(|t| t.0))
            .bind(d.dkim.as_ref().map(|k| k.selector.as_str()))
            .bind(d.dkim.as_ref().map(|k| k.algorithm.as_str()))
            .bind(d.dkim.as_ref().map(|k| k.private_key.as_str()))
            .bind(d.dkim.as_ref().map(|k| k.dns_record.as_str()))
            .bind(d.return_path.as_ref().map(|r| r.as_str()))
            .bind(d.tracking_host.as_ref().map(|r| r.as_str()))
            .execute(pool)
            .await
            .map_err(|e| {
                insert_err(
                    e,
                    || format!("domain {}", d.domain),
                    &d.tenant,
                    || format!("domain {} is already registered", d.domain),
                    db_err,
                )
            })?;
            Ok(())
        }

        pub(crate) async fn domain(
            pool: &$pool,
            domain: &Domain,
        ) -> Result<Option<TenantDomain>, StoreError> {
            let row = sqlx::query(&$sql(&format!("{SELECT_DOMAIN} WHERE domain = $1")))
                .bind(domain.as_str())
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            row.as_ref().map(domain_row).transpose()
        }

        pub(crate) async fn domains(
            pool: &$pool,
            tenant: &TenantId,
        ) -> Result<Vec<TenantDomain>, StoreError> {
            let rows = sqlx::query(&$sql(&format!(
                "{SELECT_DOMAIN} WHERE tenant = $1 ORDER BY domain"
            )))
            .bind(tenant.as_str())
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter().map(domain_row).collect()
        }

        pub(crate) async fn verify_domain(
            pool: &$pool,
            domain: &Domain,
            at: Timestamp,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(&$sql(
                "UPDATE tenant_domains SET verified_at = COALESCE(verified_at, $2)
                 WHERE domain = $1",
            ))
            .bind(domain.as_str())
            .bind(at.0)
            .execute(pool)
            .await
            .map_err(db_err)?;
            Ok(done.rows_affected() > 0)
        }

        pub(crate) async fn remove_domain(
            pool: &$pool,
            tenant: &TenantId,
            domain: &Domain,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(&$sql(
                "DELETE FROM tenant_domains WHERE tenant = $1 AND domain = $2",
            ))
                .bind(tenant.as_str())
                .bind(domain.as_str())
                .execute(pool)
                .await
                .map_err(db_err)?;
            Ok(done.rows_affected() > 0)
        }

        pub(crate) async fn set_domain_hosts(
            pool: &$pool,
            domain: &Domain,
            return_path: Option<&Domain>,
            tracking: Option<&Domain>,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(&$sql(
                "UPDATE tenant_domains SET return_path = $2, tracking_host = $3 WHERE domain = $1",
            ))
            .bind(domain.as_str())
            .bind(return_path.map(Domain::as_str))
            .bind(tracking.map(Domain::as_str))
            .execute(pool)
            .await
            .map_err(db_err)?;
            Ok(done.rows_affected() > 0)
        }
    };
}

pub(crate) use domains;
