//! Campaign lifecycle: states and their transitions, staged recipients, and the
//! idempotency records of single sends.
//!
//! A transition is one conditional UPDATE at READ COMMITTED: a second caller racing
//! for the same row waits for the first one's row lock, then re-checks the status
//! on the row as committed, finds it changed and updates nothing.

use super::catalog::{CAMPAIGN_COLUMNS, campaign_row};
use super::rows::{RowReader, db_err, is_kind, raw_text, row_err};
use crate::row_reader::map_json;
use maily_engine::ports::{IdempotentSend, StoreError, Transition};
use maily_engine::{
    Campaign, CampaignId, CampaignState, CampaignStatus, MessageId, StagedRecipient, TenantId,
    Timestamp,
};
use sqlx::error::ErrorKind;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;

/// Ids per `= ANY($1)` array when updating rows by key.
const IDS_PER_STATEMENT: usize = 10_000;

pub(super) async fn update_campaign(pool: &PgPool, c: &Campaign) -> Result<bool, StoreError> {
    let row = || format!("campaign {}", c.id);
    let template = serde_json::to_value(&c.template).map_err(|e| StoreError::InvalidRow {
        row: row(),
        reason: format!("template does not serialise: {e}"),
    })?;
    let done = sqlx::query(
        "UPDATE campaigns SET name = $1, from_addr = $2, from_name = $3, template = $4
         WHERE id = $5::uuid AND tenant = $6",
    )
    .bind(&c.name)
    .bind(c.from.as_str())
    .bind(c.from_name.as_deref())
    .bind(template)
    .bind(c.id.to_string())
    .bind(c.tenant.as_str())
    .execute(pool)
    .await
    .map_err(|e| row_err(e, row))?;
    if done.rows_affected() > 0 {
        return Ok(true);
    }
    // No row of that id and tenant. A campaign never changes tenant and is never
    // deleted, so what this finds cannot have changed since the update.
    let owner: Option<String> =
        sqlx::query_scalar("SELECT tenant FROM campaigns WHERE id = $1::uuid")
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

const SELECT_STATE: &str =
    "SELECT status, scheduled_at, status_at FROM campaigns WHERE id = $1::uuid";

async fn state_on(
    conn: &mut PgConnection,
    id: CampaignId,
) -> Result<Option<CampaignState>, StoreError> {
    let row = sqlx::query(SELECT_STATE)
        .bind(id.to_string())
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.map(|row| RowReader::new(&row, "campaigns", id).campaign_state())
        .transpose()
}

pub(super) async fn campaign_state(
    pool: &PgPool,
    id: CampaignId,
) -> Result<Option<CampaignState>, StoreError> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    state_on(&mut conn, id).await
}

pub(super) async fn campaigns(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Vec<(Campaign, CampaignState)>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE tenant = $1
         ORDER BY created_at, campaigns.id"
    ))
    .bind(tenant.as_str())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(campaign_row).collect()
}

pub(super) async fn transition_campaign(
    pool: &PgPool,
    id: CampaignId,
    from: &[CampaignStatus],
    to: CampaignStatus,
    scheduled_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<Transition, StoreError> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let mut tx = pool.begin().await.map_err(db_err)?;
    let row = sqlx::query(
        "UPDATE campaigns SET status = $1, scheduled_at = coalesce($2, scheduled_at),
             status_at = $3
         WHERE id = $4::uuid AND status = ANY($5)
         RETURNING status, scheduled_at, status_at",
    )
    .bind(to.as_str())
    .bind(scheduled_at.map(|t| t.0))
    .bind(now.0)
    .bind(id.to_string())
    .bind(&from)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?;
    let changed = row
        .map(|row| RowReader::new(&row, "campaigns", id).campaign_state())
        .transpose()?;
    let outcome = match changed {
        Some(state) => {
            if to == CampaignStatus::Cancelled {
                sqlx::query(
                    "DELETE FROM staged_recipients WHERE campaign = $1::uuid AND state = 'pending'",
                )
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            Transition::Done(state)
        }
        // A fresh snapshot: the status a racing winner committed.
        None => match state_on(&mut tx, id).await? {
            Some(state) => Transition::Refused(state),
            None => Transition::Unknown,
        },
    };
    tx.commit().await.map_err(db_err)?;
    Ok(outcome)
}

pub(super) async fn due_campaigns(
    pool: &PgPool,
    now: Timestamp,
) -> Result<Vec<CampaignId>, StoreError> {
    let rows = sqlx::query(
        "SELECT id::text AS id FROM campaigns WHERE status = 'scheduled' AND scheduled_at <= $1
         ORDER BY scheduled_at, campaigns.id",
    )
    .bind(now.0)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(campaign_id).collect()
}

fn campaign_id(row: &PgRow) -> Result<CampaignId, StoreError> {
    RowReader::new(row, "campaigns", raw_text(row, "id")).parse("id")
}

/// `recipients` without the earlier rows of a message id given twice, as if staged
/// one after the other: the later row wins and takes the later place. One statement
/// cannot upsert a key twice.
fn last_of_each(recipients: &[StagedRecipient]) -> Vec<&StagedRecipient> {
    let last: HashMap<MessageId, usize> = recipients
        .iter()
        .enumerate()
        .map(|(i, r)| (r.message_id, i))
        .collect();
    if last.len() == recipients.len() {
        return recipients.iter().collect();
    }
    recipients
        .iter()
        .enumerate()
        .filter(|(i, r)| last[&r.message_id] == *i)
        .map(|(_, r)| r)
        .collect()
}

pub(super) async fn stage_recipients(
    pool: &PgPool,
    campaign: CampaignId,
    recipients: &[StagedRecipient],
    chunk_rows: usize,
) -> Result<(), StoreError> {
    if recipients.is_empty() {
        return Ok(());
    }
    let rows = last_of_each(recipients);
    let campaign_text = campaign.to_string();
    let mut tx = pool.begin().await.map_err(db_err)?;
    for chunk in rows.chunks(chunk_rows.max(1)) {
        let ids: Vec<String> = chunk.iter().map(|r| r.message_id.to_string()).collect();
        let emails: Vec<&str> = chunk.iter().map(|r| r.email.as_str()).collect();
        let vars: Vec<String> = chunk.iter().map(|r| map_json(&r.vars)).collect();
        // Rows are inserted in ORDER BY order, so each takes its seq in the given
        // order; a re-staged id takes the seq its proposed row drew (EXCLUDED.seq),
        // which moves it to the end.
        sqlx::query(
            "INSERT INTO staged_recipients (message_id, campaign, email, vars, state)
             SELECT m, $1::uuid, e, v, 'pending'
             FROM UNNEST($2::uuid[], $3::text[], $4::text[]) WITH ORDINALITY AS t (m, e, v, n)
             ORDER BY n
             ON CONFLICT (message_id) DO UPDATE SET campaign = EXCLUDED.campaign,
                 email = EXCLUDED.email, vars = EXCLUDED.vars, state = 'pending',
                 seq = EXCLUDED.seq",
        )
        .bind(&campaign_text)
        .bind(ids)
        .bind(emails)
        .bind(vars)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_kind(&e, ErrorKind::ForeignKeyViolation) {
                StoreError::InvalidRow {
                    row: format!("campaign {campaign}"),
                    reason: "no such campaign to stage recipients for".into(),
                }
            } else {
                row_err(e, || format!("staged recipients of campaign {campaign}"))
            }
        })?;
    }
    tx.commit().await.map_err(db_err)
}

pub(super) async fn pending_recipients(
    pool: &PgPool,
    campaign: CampaignId,
    limit: usize,
) -> Result<Vec<StagedRecipient>, StoreError> {
    let rows = sqlx::query(
        "SELECT message_id::text AS message_id, email, vars FROM staged_recipients
         WHERE campaign = $1::uuid AND state = 'pending' ORDER BY seq LIMIT $2",
    )
    .bind(campaign.to_string())
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|row| {
            let r = RowReader::new(row, "staged_recipients", raw_text(row, "message_id"));
            Ok(StagedRecipient {
                message_id: r.parse("message_id")?,
                email: r.parse("email")?,
                vars: r.string_map("vars")?,
            })
        })
        .collect()
}

pub(super) async fn mark_launched(
    pool: &PgPool,
    campaign: CampaignId,
    ids: &[MessageId],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let campaign_text = campaign.to_string();
    let mut tx = pool.begin().await.map_err(db_err)?;
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let keys: Vec<String> = chunk.iter().map(MessageId::to_string).collect();
        sqlx::query(
            "UPDATE staged_recipients SET state = 'launched'
             WHERE campaign = $1::uuid AND message_id = ANY($2::uuid[])",
        )
        .bind(&campaign_text)
        .bind(keys)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)
}

pub(super) async fn launchable_campaigns(pool: &PgPool) -> Result<Vec<CampaignId>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.id::text AS id FROM campaigns c WHERE c.status = 'running'
           AND EXISTS (SELECT 1 FROM staged_recipients s
                       WHERE s.campaign = c.id AND s.state = 'pending')
         ORDER BY c.created_at, c.id",
    )
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(campaign_id).collect()
}

pub(super) async fn staged_counts(
    pool: &PgPool,
    campaign: CampaignId,
) -> Result<(u64, u64), StoreError> {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
                count(*) FILTER (WHERE state = 'launched') AS launched
         FROM staged_recipients WHERE campaign = $1::uuid",
    )
    .bind(campaign.to_string())
    .fetch_one(pool)
    .await
    .map_err(db_err)?;
    let r = RowReader::new(
        &row,
        "staged_recipients",
        format_args!("of campaign {campaign}"),
    );
    Ok((r.u64("pending")?, r.u64("launched")?))
}

fn send_row(row: &PgRow) -> Result<IdempotentSend, StoreError> {
    let key = format!("{}/{}", raw_text(row, "tenant"), raw_text(row, "idem_key"));
    let r = RowReader::new(row, "idempotent_sends", key);
    Ok(IdempotentSend {
        tenant: r.tenant("tenant")?,
        key: r.get("idem_key")?,
        campaign: r.parse("campaign")?,
        message_id: r.parse("message_id")?,
        email: r.parse("email")?,
        fingerprint: r.hash("fingerprint")?,
        accepted_at: Timestamp(r.get("accepted_at")?),
        enqueued: r.get("enqueued")?,
    })
}

pub(super) async fn reserve_sends(
    pool: &PgPool,
    sends: &[IdempotentSend],
) -> Result<Vec<IdempotentSend>, StoreError> {
    if sends.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<&str> = sends.iter().map(|s| s.tenant.as_str()).collect();
    let keys: Vec<&str> = sends.iter().map(|s| s.key.as_str()).collect();
    let campaigns: Vec<String> = sends.iter().map(|s| s.campaign.to_string()).collect();
    let ids: Vec<String> = sends.iter().map(|s| s.message_id.to_string()).collect();
    let emails: Vec<&str> = sends.iter().map(|s| s.email.as_str()).collect();
    let fingerprints: Vec<Vec<u8>> = sends.iter().map(|s| s.fingerprint.to_vec()).collect();
    let accepted: Vec<i64> = sends.iter().map(|s| s.accepted_at.0).collect();
    let enqueued: Vec<bool> = sends.iter().map(|s| s.enqueued).collect();
    let mut tx = pool.begin().await.map_err(db_err)?;
    // Rows go in in the given order, so of a key given twice the first one is stored.
    // A concurrent request inserting the same key makes this one wait for its
    // commit, then do nothing; the SELECT below (a fresh snapshot) sees its row.
    sqlx::query(
        "INSERT INTO idempotent_sends (tenant, idem_key, campaign, message_id, email,
             fingerprint, accepted_at, enqueued)
         SELECT t, k, c, m, e, f, a, q
         FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::bytea[],
                     $7::bigint[], $8::boolean[]) WITH ORDINALITY AS u (t, k, c, m, e, f, a, q, n)
         ORDER BY n
         ON CONFLICT (tenant, idem_key) DO NOTHING",
    )
    .bind(&tenants)
    .bind(&keys)
    .bind(campaigns)
    .bind(ids)
    .bind(emails)
    .bind(fingerprints)
    .bind(accepted)
    .bind(enqueued)
    .execute(&mut *tx)
    .await
    .map_err(|e| row_err(e, || format!("idempotent send {}/{}", tenants[0], keys[0])))?;
    let rows = sqlx::query(
        "SELECT tenant, idem_key, campaign::text AS campaign, message_id::text AS message_id,
             email, fingerprint, accepted_at, enqueued
         FROM idempotent_sends
         WHERE (tenant, idem_key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
    )
    .bind(&tenants)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    let mut by_key: HashMap<(String, String), IdempotentSend> = HashMap::new();
    for row in &rows {
        let send = send_row(row)?;
        by_key.insert((send.tenant.as_str().to_string(), send.key.clone()), send);
    }
    sends
        .iter()
        .map(|s| {
            by_key
                .get(&(s.tenant.as_str().to_string(), s.key.clone()))
                .cloned()
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "idempotent send {}/{} was stored but not found",
                        s.tenant, s.key
                    ))
                })
        })
        .collect()
}

pub(super) async fn mark_sends_enqueued(
    pool: &PgPool,
    tenant: &TenantId,
    keys: &[String],
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(db_err)?;
    for chunk in keys.chunks(IDS_PER_STATEMENT) {
        sqlx::query(
            "UPDATE idempotent_sends SET enqueued = true WHERE tenant = $1 AND idem_key = ANY($2)",
        )
        .bind(tenant.as_str())
        .bind(chunk)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)
}
