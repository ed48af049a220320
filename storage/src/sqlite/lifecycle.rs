//! Campaign lifecycle: states and their transitions, staged recipients, and the
//! idempotency records of single sends.

use super::catalog::{CAMPAIGN_COLUMNS, campaign_row};
use super::rows::{RowReader, db_err, is_kind, placeholders, raw_text};
use crate::row_reader::map_json;
use maily_engine::ports::{IdempotentSend, StoreError, Transition};
use maily_engine::template::Template;
use maily_engine::{
    Campaign, CampaignId, CampaignState, CampaignStatus, MessageId, StagedRecipient, TenantId,
    Timestamp,
};
use sqlx::error::ErrorKind;
use sqlx::sqlite::SqliteRow;
use sqlx::{SqliteConnection, SqlitePool};

/// Staged rows per multi-row INSERT: 4 parameters each, far below SQLite's limit of
/// 32,766 parameters per statement, and big enough that a 10,000-row upload takes
/// ten statements.
const STAGE_ROWS_PER_STATEMENT: usize = 1_000;

/// Ids per `IN (...)` list when updating rows by key.
const IDS_PER_STATEMENT: usize = 1_000;

pub(super) async fn update_campaign(pool: &SqlitePool, c: &Campaign) -> Result<bool, StoreError> {
    let template = template_json(c)?;
    let done = sqlx::query(
        "UPDATE campaigns SET name = ?, from_addr = ?, from_name = ?, template = ?
         WHERE id = ? AND tenant = ?",
    )
    .bind(&c.name)
    .bind(c.from.as_str())
    .bind(c.from_name.as_deref())
    .bind(template)
    .bind(c.id.to_string())
    .bind(c.tenant.as_str())
    .execute(pool)
    .await
    .map_err(db_err)?;
    if done.rows_affected() > 0 {
        return Ok(true);
    }
    // No row of that id and tenant. A campaign never changes tenant and is never
    // deleted, so what this finds cannot have changed since the update.
    let owner: Option<String> = sqlx::query_scalar("SELECT tenant FROM campaigns WHERE id = ?")
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

fn template_json(c: &Campaign) -> Result<String, StoreError> {
    serde_json::to_string::<Template>(&c.template).map_err(|e| StoreError::InvalidRow {
        row: format!("campaign {}", c.id),
        reason: format!("template does not serialise: {e}"),
    })
}

const SELECT_STATE: &str = "SELECT status, scheduled_at, status_at FROM campaigns WHERE id = ?";

async fn state_on(
    conn: &mut SqliteConnection,
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
    pool: &SqlitePool,
    id: CampaignId,
) -> Result<Option<CampaignState>, StoreError> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    state_on(&mut conn, id).await
}

pub(super) async fn campaigns(
    pool: &SqlitePool,
    tenant: &TenantId,
) -> Result<Vec<(Campaign, CampaignState)>, StoreError> {
    // rowid breaks ties between campaigns created in the same millisecond.
    let rows = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE tenant = ? ORDER BY created_at, rowid"
    ))
    .bind(tenant.as_str())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(campaign_row).collect()
}

pub(super) async fn transition_campaign(
    pool: &SqlitePool,
    id: CampaignId,
    from: &[CampaignStatus],
    to: CampaignStatus,
    scheduled_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<Transition, StoreError> {
    // IMMEDIATE: the write lock is held from the start, so the status checked by the
    // UPDATE is the status when it commits, and racing callers take turns.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    let changed = if from.is_empty() {
        None
    } else {
        let sql = format!(
            "UPDATE campaigns SET status = ?, scheduled_at = coalesce(?, scheduled_at),
                 status_at = ?
             WHERE id = ? AND status IN ({})
             RETURNING status, scheduled_at, status_at",
            placeholders(from.len())
        );
        let mut query = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(scheduled_at.map(|t| t.0))
            .bind(now.0)
            .bind(id.to_string());
        for status in from {
            query = query.bind(status.as_str());
        }
        let row = query.fetch_optional(&mut *tx).await.map_err(db_err)?;
        row.map(|row| RowReader::new(&row, "campaigns", id).campaign_state())
            .transpose()?
    };
    let outcome = match changed {
        Some(state) => {
            if to == CampaignStatus::Cancelled {
                sqlx::query(
                    "DELETE FROM staged_recipients WHERE campaign = ? AND state = 'pending'",
                )
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            Transition::Done(state)
        }
        None => match state_on(&mut tx, id).await? {
            Some(state) => Transition::Refused(state),
            None => Transition::Unknown,
        },
    };
    tx.commit().await.map_err(db_err)?;
    Ok(outcome)
}

pub(super) async fn due_campaigns(
    pool: &SqlitePool,
    now: Timestamp,
) -> Result<Vec<CampaignId>, StoreError> {
    let rows = sqlx::query(
        "SELECT id FROM campaigns WHERE status = 'scheduled' AND scheduled_at <= ?
         ORDER BY scheduled_at, id",
    )
    .bind(now.0)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(campaign_id).collect()
}

fn campaign_id(row: &SqliteRow) -> Result<CampaignId, StoreError> {
    RowReader::new(row, "campaigns", raw_text(row, "id")).parse("id")
}

pub(super) async fn stage_recipients(
    pool: &SqlitePool,
    campaign: CampaignId,
    recipients: &[StagedRecipient],
) -> Result<(), StoreError> {
    if recipients.is_empty() {
        return Ok(());
    }
    let campaign_text = campaign.to_string();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    for chunk in recipients.chunks(STAGE_ROWS_PER_STATEMENT) {
        // REPLACE deletes a row staged before under the same message id and inserts a
        // new one, with a new (last) seq: re-staged messages go to the end, pending.
        let sql = format!(
            "INSERT OR REPLACE INTO staged_recipients (message_id, campaign, email, vars, state)
             VALUES {}",
            vec!["(?, ?, ?, ?, 'pending')"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(&sql);
        for r in chunk {
            query = query
                .bind(r.message_id.to_string())
                .bind(&campaign_text)
                .bind(r.email.as_str())
                .bind(map_json(&r.vars));
        }
        query.execute(&mut *tx).await.map_err(|e| {
            if is_kind(&e, ErrorKind::ForeignKeyViolation) {
                StoreError::InvalidRow {
                    row: format!("campaign {campaign}"),
                    reason: "no such campaign to stage recipients for".into(),
                }
            } else {
                db_err(e)
            }
        })?;
    }
    tx.commit().await.map_err(db_err)
}

pub(super) async fn pending_recipients(
    pool: &SqlitePool,
    campaign: CampaignId,
    limit: usize,
) -> Result<Vec<StagedRecipient>, StoreError> {
    let rows = sqlx::query(
        "SELECT message_id, email, vars FROM staged_recipients
         WHERE campaign = ? AND state = 'pending' ORDER BY seq LIMIT ?",
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
    pool: &SqlitePool,
    campaign: CampaignId,
    ids: &[MessageId],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let campaign_text = campaign.to_string();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE staged_recipients SET state = 'launched'
             WHERE campaign = ? AND message_id IN ({})",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(&campaign_text);
        for id in chunk {
            query = query.bind(id.to_string());
        }
        query.execute(&mut *tx).await.map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)
}

pub(super) async fn launchable_campaigns(pool: &SqlitePool) -> Result<Vec<CampaignId>, StoreError> {
    let rows = sqlx::query(
        "SELECT id FROM campaigns c WHERE status = 'running'
           AND EXISTS (SELECT 1 FROM staged_recipients s
                       WHERE s.campaign = c.id AND s.state = 'pending')
         ORDER BY created_at, rowid",
    )
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(campaign_id).collect()
}

pub(super) async fn staged_counts(
    pool: &SqlitePool,
    campaign: CampaignId,
) -> Result<(u64, u64), StoreError> {
    let row = sqlx::query(
        "SELECT coalesce(sum(state = 'pending'), 0) AS pending,
                coalesce(sum(state = 'launched'), 0) AS launched
         FROM staged_recipients WHERE campaign = ?",
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

fn send_row(row: &SqliteRow) -> Result<IdempotentSend, StoreError> {
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
    pool: &SqlitePool,
    sends: &[IdempotentSend],
) -> Result<Vec<IdempotentSend>, StoreError> {
    let mut stored = Vec::with_capacity(sends.len());
    if sends.is_empty() {
        return Ok(stored);
    }
    // One IMMEDIATE transaction: a racing request with the same key waits, then finds
    // this one's row.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    for s in sends {
        sqlx::query(
            "INSERT INTO idempotent_sends (tenant, idem_key, campaign, message_id, email,
                 fingerprint, accepted_at, enqueued)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant, idem_key) DO NOTHING",
        )
        .bind(s.tenant.as_str())
        .bind(&s.key)
        .bind(s.campaign.to_string())
        .bind(s.message_id.to_string())
        .bind(s.email.as_str())
        .bind(s.fingerprint.as_slice())
        .bind(s.accepted_at.0)
        .bind(s.enqueued)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let row = sqlx::query(
            "SELECT tenant, idem_key, campaign, message_id, email, fingerprint, accepted_at,
                 enqueued
             FROM idempotent_sends WHERE tenant = ? AND idem_key = ?",
        )
        .bind(s.tenant.as_str())
        .bind(&s.key)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        stored.push(send_row(&row)?);
    }
    tx.commit().await.map_err(db_err)?;
    Ok(stored)
}

pub(super) async fn mark_sends_enqueued(
    pool: &SqlitePool,
    tenant: &TenantId,
    keys: &[String],
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    for chunk in keys.chunks(IDS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE idempotent_sends SET enqueued = 1 WHERE tenant = ? AND idem_key IN ({})",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(tenant.as_str());
        for key in chunk {
            query = query.bind(key);
        }
        query.execute(&mut *tx).await.map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)
}
