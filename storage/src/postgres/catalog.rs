//! Tenants, campaigns and suppression lists.

use super::rows::{RowReader, db_err, is_kind, raw_text, row_err};
use maily_engine::ports::{StoreError, TenantRecord};
use maily_engine::template::Template;
use maily_engine::{Campaign, CampaignId, CampaignState, EmailAddress, TenantId, Timestamp};
use sqlx::PgPool;
use sqlx::error::ErrorKind;
use sqlx::postgres::PgRow;

pub(super) async fn upsert_tenant(
    pool: &PgPool,
    tenant: &TenantId,
    name: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tenants (id, name) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()",
    )
    .bind(tenant.as_str())
    .bind(name)
    .execute(pool)
    .await
    .map_err(|e| row_err(e, || format!("tenant {tenant}")))?;
    Ok(())
}

/// Stores a new campaign with its state; `created_at` is the store's own clock.
pub(super) async fn insert_campaign(
    pool: &PgPool,
    c: &Campaign,
    state: &CampaignState,
) -> Result<(), StoreError> {
    let row = || format!("campaign {}", c.id);
    let template = serde_json::to_value(&c.template).map_err(|e| StoreError::InvalidRow {
        row: row(),
        reason: format!("template does not serialise: {e}"),
    })?;
    sqlx::query(
        "INSERT INTO campaigns (id, tenant, name, from_addr, from_name, template,
             status, scheduled_at, status_at)
         VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
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
        if is_kind(&e, ErrorKind::UniqueViolation) {
            StoreError::Conflict(format!("campaign {} already exists", c.id))
        } else if is_kind(&e, ErrorKind::ForeignKeyViolation) {
            StoreError::InvalidRow {
                row: row(),
                reason: format!("tenant {} does not exist", c.tenant),
            }
        } else {
            // e.g. a NUL character in a name or in the template, which Postgres text
            // and JSONB cannot hold.
            row_err(e, row)
        }
    })?;
    Ok(())
}

/// The columns [`campaign_row`] reads.
pub(super) const CAMPAIGN_COLUMNS: &str = "id::text AS id, tenant, name, from_addr, from_name, \
     template, status, scheduled_at, status_at";

/// A campaign row read with [`CAMPAIGN_COLUMNS`], with its state.
pub(super) fn campaign_row(row: &PgRow) -> Result<(Campaign, CampaignState), StoreError> {
    let r = RowReader::new(row, "campaigns", raw_text(row, "id"));
    let template_json: serde_json::Value = r.get("template")?;
    let template: Template = serde_json::from_value(template_json)
        .map_err(|e| r.corrupt("template", format!("not a template: {e}")))?;
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

pub(super) async fn campaign(
    pool: &PgPool,
    id: CampaignId,
) -> Result<Option<Campaign>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1::uuid"
    ))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    Ok(row.as_ref().map(campaign_row).transpose()?.map(|(c, _)| c))
}

pub(super) async fn suppress(
    pool: &PgPool,
    tenant: &TenantId,
    email: &EmailAddress,
    reason: &str,
) -> Result<(), StoreError> {
    // The first reason is kept: it says why the address was suppressed to begin with.
    sqlx::query(
        "INSERT INTO suppressions (tenant, email, reason) VALUES ($1, $2, $3)
         ON CONFLICT (tenant, email) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(email.mailbox_key().as_str())
    .bind(reason)
    .execute(pool)
    .await
    .map_err(|e| row_err(e, || format!("suppression {tenant}/{email}")))?;
    Ok(())
}

pub(super) async fn unsuppress(
    pool: &PgPool,
    tenant: &TenantId,
    email: &EmailAddress,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM suppressions WHERE tenant = $1 AND email = $2")
        .bind(tenant.as_str())
        .bind(email.mailbox_key().as_str())
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn is_suppressed(
    pool: &PgPool,
    tenant: &TenantId,
    email: &EmailAddress,
) -> Result<bool, StoreError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM suppressions WHERE tenant = $1 AND email = $2)",
    )
    .bind(tenant.as_str())
    .bind(email.mailbox_key().as_str())
    .fetch_one(pool)
    .await
    .map_err(db_err)
}

pub(super) async fn suppression_page(
    pool: &PgPool,
    tenant: &TenantId,
    after: Option<&EmailAddress>,
    limit: usize,
) -> Result<Vec<(EmailAddress, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT email, reason FROM suppressions
         WHERE tenant = $1 AND ($2::text IS NULL OR email > $2)
         ORDER BY email LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(after.map(|a| a.mailbox_key().to_string()))
    .bind(limit.min(i64::MAX as usize) as i64)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|row| {
            let key = format!("{tenant}/{}", raw_text(row, "email"));
            let r = RowReader::new(row, "suppressions", key);
            Ok((r.parse("email")?, r.get("reason")?))
        })
        .collect()
}

pub(super) async fn suppressions(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Vec<(EmailAddress, String)>, StoreError> {
    let rows =
        sqlx::query("SELECT email, reason FROM suppressions WHERE tenant = $1 ORDER BY email")
            .bind(tenant.as_str())
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
    rows.iter()
        .map(|row| {
            let key = format!("{tenant}/{}", raw_text(row, "email"));
            let r = RowReader::new(row, "suppressions", key);
            Ok((r.parse("email")?, r.get("reason")?))
        })
        .collect()
}

// created_at is the store's own TIMESTAMPTZ; the engine sees milliseconds.
const SELECT_TENANT: &str = "SELECT id, name, \
     floor(extract(epoch FROM created_at) * 1000)::bigint AS created_at FROM tenants";

fn tenant_row(row: &PgRow) -> Result<TenantRecord, StoreError> {
    let r = RowReader::new(row, "tenants", raw_text(row, "id"));
    Ok(TenantRecord {
        id: r.tenant("id")?,
        name: r.get("name")?,
        created_at: Timestamp(r.get("created_at")?),
    })
}

pub(super) async fn tenants(pool: &PgPool) -> Result<Vec<TenantRecord>, StoreError> {
    let rows = sqlx::query(&format!("{SELECT_TENANT} ORDER BY id"))
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.iter().map(tenant_row).collect()
}

pub(super) async fn tenant(
    pool: &PgPool,
    id: &TenantId,
) -> Result<Option<TenantRecord>, StoreError> {
    let row = sqlx::query(&format!("{SELECT_TENANT} WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(tenant_row).transpose()
}
