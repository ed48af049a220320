//! Tenants, campaign rows (created, edited, read) and suppression lists, one SQL text
//! for both dialects.

/// The catalog functions for one backend (see [`super::domains::domains`] for the
/// parameters). Its `rows` also names the store's clock for bookkeeping columns
/// (`NOW`) and how such a column reads as milliseconds (`millis`).
macro_rules! catalog {
    ($pool:ty, $row:ty, $sql:path) => {
        use crate::sql::rows::insert_err;
        use super::rows::{NOW, RowReader, db_err, millis, raw_text, row_err};
        use maily_engine::ports::{StoreError, TenantRecord};
        use maily_engine::template::Template;
        use maily_engine::{Campaign, CampaignId, CampaignState, EmailAddress, TenantId, Timestamp};
        use sqlx::types::Json;
        use std::sync::LazyLock;

        pub(crate) async fn upsert_tenant(
            pool: &$pool,
            tenant: &TenantId,
            name: &str,
        ) -> Result<(), StoreError> {
            static UPSERT: LazyLock<String> = LazyLock::new(|| {
                $sql(&format!(
                    "INSERT INTO tenants (id, name, created_at, updated_at)
                     VALUES ($1, $2, {NOW}, {NOW})
                     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = {NOW}"
                ))
                .into_owned()
            });
            sqlx::query(&UPSERT)
                .bind(tenant.as_str())
                .bind(name)
                .execute(pool)
                .await
                .map_err(|e| row_err(e, || format!("tenant {tenant}")))?;
            Ok(())
        }

        /// Stores a new campaign with its state; `created_at` is the store's own clock.
        pub(crate) async fn insert_campaign(
            pool: &$pool,
            c: &Campaign,
            state: &CampaignState,
        ) -> Result<(), StoreError> {
            static INSERT: LazyLock<String> = LazyLock::new(|| {
                $sql(&format!(
                    "INSERT INTO campaigns (id, tenant, name, from_addr, from_name, template,
                         status, scheduled_at, status_at, created_at)
                     VALUES ($1::uuid, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, {NOW})"
                ))
                .into_owned()
            });
            let row = || format!("campaign {}", c.id);
            let template = template_json(c)?;
            sqlx::query(&INSERT)
                .bind(c.id.to_string())
                .bind(c.tenant.as_str())
                .bind(&c.name)
                .bind(c.from.as_str())
                .bind(c.from_name.as_deref())
                .bind(template)
                .bind(state.status.as_str())
                .bind(state.scheduled_at.map(|t| t.0))
                .bind(state.updated_at.0)
                .execute(pool)
                .await
                .map_err(|e| {
                    // Else e.g. a NUL character in a name or in the template, which
                    // Postgres text and JSONB cannot hold.
                    insert_err(
                        e,
                        row,
                        &c.tenant,
                        || format!("campaign {} already exists", c.id),
                        |e| row_err(e, row),
                    )
                })?;
            Ok(())
        }

        /// Changes what a tenant may edit of its campaign (not its state); `false` if
        /// the tenant has no campaign of that id.
        pub(crate) async fn update_campaign(
            pool: &$pool,
            c: &Campaign,
        ) -> Result<bool, StoreError> {
            let row = || format!("campaign {}", c.id);
            let template = template_json(c)?;
            let done = sqlx::query(&$sql(
                "UPDATE campaigns SET name = $1, from_addr = $2, from_name = $3,
                     template = $4::jsonb
                 WHERE id = $5::uuid AND tenant = $6",
            ))
            .bind(&c.name)
            .bind(c.from.as_str())
            .bind(c.from_name.as_deref())
            .bind(template)
            .bind(c.id.to_string())
            .bind(c.tenant.as_str())
            .execute(pool)
            .await
            // e.g. a NUL character in the name or the template, which Postgres text and
            // JSONB cannot hold.
            .map_err(|e| row_err(e, row))?;
            if done.rows_affected() > 0 {
                return Ok(true);
            }
            // No row of that id and tenant. A campaign never changes tenant and is never
            // deleted, so what this finds cannot have changed since the update.
            let owner: Option<String> =
                sqlx::query_scalar(&$sql("SELECT tenant FROM campaigns WHERE id = $1::uuid"))
                    .bind(c.id.to_string())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
            match owner {
                Some(owner) => Err(StoreError::Conflict(format!(
                    "campaign {} belongs to tenant {owner}, not {}",
                    c.id, c.tenant
                ))),
                None => Ok(false),
            }
        }

        /// A campaign's template as stored (JSON).
        fn template_json(c: &Campaign) -> Result<String, StoreError> {
            serde_json::to_string(&c.template).map_err(|e| StoreError::InvalidRow {
                row: format!("campaign {}", c.id),
                reason: format!("template does not serialise: {e}"),
            })
        }

        /// The columns [`campaign_row`] reads (written for Postgres: a statement that
        /// uses them goes through the dialect's `$sql`).
        pub(crate) const CAMPAIGN_COLUMNS: &str = "id::text AS id, tenant, name, from_addr, \
             from_name, template, status, scheduled_at, status_at";

        /// A campaign row read with [`CAMPAIGN_COLUMNS`], with its state.
        pub(crate) fn campaign_row(row: &$row) -> Result<(Campaign, CampaignState), StoreError> {
            let r = RowReader::new(row, "campaigns", raw_text(row, "id"));
            let Json(template) = r.get::<Json<Template>>("template")?;
            let campaign = Campaign {
                id: r.parse("id")?,
                tenant: r.tenant("tenant")?,
                name: r.get("name")?,
                from: r.parse("from_addr")?,
                from_name: r.get("from_name")?,
                template,
            };
            Ok((campaign, r.campaign_state()?))
        }

        pub(crate) async fn campaign(
            pool: &$pool,
            id: CampaignId,
        ) -> Result<Option<Campaign>, StoreError> {
            static SELECT: LazyLock<String> = LazyLock::new(|| {
                $sql(&format!(
                    "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1::uuid"
                ))
                .into_owned()
            });
            let row = sqlx::query(&SELECT)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            Ok(row.as_ref().map(campaign_row).transpose()?.map(|(c, _)| c))
        }

        pub(crate) async fn suppress(
            pool: &$pool,
            tenant: &TenantId,
            email: &EmailAddress,
            reason: &str,
        ) -> Result<(), StoreError> {
            static INSERT: LazyLock<String> = LazyLock::new(|| {
                $sql(&format!(
                    "INSERT INTO suppressions (tenant, email, reason, created_at)
                     VALUES ($1, $2, $3, {NOW})
                     ON CONFLICT (tenant, email) DO NOTHING"
                ))
                .into_owned()
            });
            // The first reason is kept: it says why the address was suppressed to begin
            // with.
            sqlx::query(&INSERT)
                .bind(tenant.as_str())
                .bind(email.mailbox_key().as_str())
                .bind(reason)
                .execute(pool)
                .await
                .map_err(|e| row_err(e, || format!("suppression {tenant}/{email}")))?;
            Ok(())
        }

        pub(crate) async fn unsuppress(
            pool: &$pool,
            tenant: &TenantId,
            email: &EmailAddress,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(&$sql(
                "DELETE FROM suppressions WHERE tenant = $1 AND email = $2",
            ))
            .bind(tenant.as_str())
            .bind(email.mailbox_key().as_str())
            .execute(pool)
            .await
            .map_err(db_err)?;
            Ok(done.rows_affected() > 0)
        }

        pub(crate) async fn is_suppressed(
            pool: &$pool,
            tenant: &TenantId,
            email: &EmailAddress,
        ) -> Result<bool, StoreError> {
            let row = sqlx::query(&$sql(
                "SELECT 1 FROM suppressions WHERE tenant = $1 AND email = $2",
            ))
            .bind(tenant.as_str())
            .bind(email.mailbox_key().as_str())
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
            Ok(row.is_some())
        }

        fn suppression_row(
            tenant: &TenantId,
            row: &$row,
        ) -> Result<(EmailAddress, String), StoreError> {
            let key = format!("{tenant}/{}", raw_text(row, "email"));
            let r = RowReader::new(row, "suppressions", key);
            Ok((r.parse("email")?, r.get("reason")?))
        }

        pub(crate) async fn suppression_page(
            pool: &$pool,
            tenant: &TenantId,
            after: Option<&EmailAddress>,
            limit: usize,
        ) -> Result<Vec<(EmailAddress, String)>, StoreError> {
            let rows = sqlx::query(&$sql(
                "SELECT email, reason FROM suppressions
                 WHERE tenant = $1 AND ($2::text IS NULL OR email > $2)
                 ORDER BY email LIMIT $3",
            ))
            .bind(tenant.as_str())
            .bind(after.map(|a| a.mailbox_key().to_string()))
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter().map(|row| suppression_row(tenant, row)).collect()
        }

        pub(crate) async fn suppressions(
            pool: &$pool,
            tenant: &TenantId,
        ) -> Result<Vec<(EmailAddress, String)>, StoreError> {
            let rows = sqlx::query(&$sql(
                "SELECT email, reason FROM suppressions WHERE tenant = $1 ORDER BY email",
            ))
            .bind(tenant.as_str())
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter().map(|row| suppression_row(tenant, row)).collect()
        }

        static SELECT_TENANT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT id, name, {} AS created_at FROM tenants",
                millis("created_at")
            )
        });

        fn tenant_row(row: &$row) -> Result<TenantRecord, StoreError> {
            let r = RowReader::new(row, "tenants", raw_text(row, "id"));
            Ok(TenantRecord {
                id: r.tenant("id")?,
                name: r.get("name")?,
                created_at: Timestamp(r.get("created_at")?),
            })
        }

        pub(crate) async fn tenants(pool: &$pool) -> Result<Vec<TenantRecord>, StoreError> {
            let rows = sqlx::query(&format!("{} ORDER BY id", *SELECT_TENANT))
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
            rows.iter().map(tenant_row).collect()
        }

        pub(crate) async fn tenant(
            pool: &$pool,
            id: &TenantId,
        ) -> Result<Option<TenantRecord>, StoreError> {
            let row = sqlx::query(&$sql(&format!("{} WHERE id = $1", *SELECT_TENANT)))
                .bind(id.as_str())
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            row.as_ref().map(tenant_row).transpose()
        }
    };
}

pub(crate) use catalog;
