//! Consumer offsets and the analytics state: campaign stats and message states.

use super::leases::check_fence;
use super::rows::{RowReader, db_err, placeholders, raw_text, stats_columns, stats_to_i64, to_i64};
use maily_engine::ports::{AggregateBatch, Fence, StoreError, StoredOffset};
use maily_engine::{
    CampaignId, CampaignStats, MessageId, ReasonCount, TenantId, Timestamp, by_frequency,
};
use sqlx::{SqliteConnection, SqlitePool};
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use tracing::debug;

/// Message rows written per INSERT. Each statement round-trips to SQLite's worker
/// thread, so batching rows is what makes large flushes cheap; 128 rows of 7 values
/// stay far below SQLite's limit on bound parameters.
const MESSAGE_ROWS_PER_STATEMENT: usize = 128;

/// Ids per `IN (...)` list when reading masks, for the same parameter limit.
const MASK_IDS_PER_QUERY: usize = 500;

const MESSAGE_COLUMNS: usize = 7;

// SQLite builds before 3.32 allow only 999 bound parameters per statement.
const _: () = assert!(MESSAGE_ROWS_PER_STATEMENT * MESSAGE_COLUMNS < 999);
const _: () = assert!(MASK_IDS_PER_QUERY < 999);

static UPSERT_STATS: LazyLock<String> = LazyLock::new(|| {
    let updates: Vec<String> = CampaignStats::FIELDS
        .iter()
        .map(|f| format!("{f} = excluded.{f}"))
        .collect();
    format!(
        "INSERT INTO campaign_stats (campaign, tenant, {}, updated_at) VALUES (?, ?, {}, ?)
         ON CONFLICT (campaign) DO UPDATE SET tenant = excluded.tenant, {}, updated_at = excluded.updated_at",
        stats_columns(),
        placeholders(CampaignStats::FIELDS.len()),
        updates.join(", ")
    )
});

static SELECT_STATS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM campaign_stats WHERE campaign = ?",
        stats_columns()
    )
});

static SELECT_ALL_STATS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT campaign, tenant, {} FROM campaign_stats ORDER BY campaign",
        stats_columns()
    )
});

fn upsert_messages_sql(rows: usize) -> String {
    let row = format!("({})", placeholders(MESSAGE_COLUMNS));
    format!(
        "INSERT INTO messages (message_id, tenant, campaign, recipient, mask, status, detail)
         VALUES {}
         ON CONFLICT (message_id) DO UPDATE SET tenant = excluded.tenant,
             campaign = excluded.campaign, recipient = excluded.recipient,
             mask = excluded.mask, status = excluded.status,
             detail = COALESCE(excluded.detail, messages.detail)",
        vec![row; rows].join(", ")
    )
}

fn select_masks_sql(ids: usize) -> String {
    format!(
        "SELECT message_id, mask FROM messages WHERE message_id IN ({})",
        placeholders(ids)
    )
}

pub(super) async fn load_offsets(
    pool: &SqlitePool,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<u32, u64>, StoreError> {
    let rows =
        sqlx::query("SELECT part, next_offset FROM consumer_offsets WHERE grp = ? AND topic = ?")
            .bind(group)
            .bind(topic)
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
    rows.iter()
        .map(|row| {
            let key = format!("{group}/{topic}/{}", raw_text(row, "part"));
            let r = RowReader::new(row, "consumer_offsets", key);
            Ok((r.u32("part")?, r.u64("next_offset")?))
        })
        .collect()
}

pub(super) async fn save_offsets(
    pool: &SqlitePool,
    group: &str,
    offsets: &[StoredOffset],
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    check_fence(&mut tx, fence).await?;
    write_offsets(&mut tx, group, offsets).await?;
    tx.commit().await.map_err(db_err)
}

/// Upserts a consumer group's positions on `conn`, inside the caller's transaction.
pub(super) async fn write_offsets(
    conn: &mut SqliteConnection,
    group: &str,
    offsets: &[StoredOffset],
) -> Result<(), StoreError> {
    for o in offsets {
        let next = to_i64(
            o.next,
            format_args!("offset {group}/{}/{}", o.topic, o.partition),
            "next",
        )?;
        // sqlx keeps this statement prepared on the connection, so the loop only binds.
        sqlx::query(
            "INSERT INTO consumer_offsets (grp, topic, part, next_offset) VALUES (?, ?, ?, ?)
             ON CONFLICT (grp, topic, part) DO UPDATE SET next_offset = excluded.next_offset",
        )
        .bind(group)
        .bind(&o.topic)
        .bind(i64::from(o.partition))
        .bind(next)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

pub(super) async fn commit_aggregates(
    pool: &SqlitePool,
    batch: &AggregateBatch,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    check_fence(&mut tx, batch.fence.as_ref()).await?;
    let now = Timestamp::now().0;
    for (tenant, campaign, stats) in &batch.stats {
        let counters = stats_to_i64(stats, format_args!("campaign_stats {campaign}"))?;
        let mut q = sqlx::query(UPSERT_STATS.as_str())
            .bind(campaign.to_string())
            .bind(tenant.as_str());
        for c in counters {
            q = q.bind(c);
        }
        q.bind(now).execute(&mut *tx).await.map_err(db_err)?;
    }
    // Full chunks share one SQL text, so the statement is prepared once per
    // connection and reused; only the last, shorter chunk needs its own.
    let full_chunk_sql = upsert_messages_sql(MESSAGE_ROWS_PER_STATEMENT);
    for chunk in batch.messages.chunks(MESSAGE_ROWS_PER_STATEMENT) {
        let tail_sql;
        let sql = if chunk.len() == MESSAGE_ROWS_PER_STATEMENT {
            full_chunk_sql.as_str()
        } else {
            tail_sql = upsert_messages_sql(chunk.len());
            tail_sql.as_str()
        };
        let mut q = sqlx::query(sql);
        for m in chunk {
            q = q
                .bind(m.message_id.to_string())
                .bind(m.tenant.as_str())
                .bind(m.campaign.to_string())
                .bind(m.recipient.as_str())
                .bind(i64::from(m.mask))
                .bind(m.status.as_str())
                .bind(m.detail.as_deref());
        }
        q.execute(&mut *tx).await.map_err(db_err)?;
    }
    write_offsets(&mut tx, &batch.group, &batch.offsets).await?;
    tx.commit().await.map_err(db_err)?;
    debug!(
        group = %batch.group,
        stats = batch.stats.len(),
        messages = batch.messages.len(),
        offsets = batch.offsets.len(),
        "aggregates committed"
    );
    Ok(())
}

pub(super) async fn campaign_stats(
    pool: &SqlitePool,
    id: CampaignId,
) -> Result<Option<CampaignStats>, StoreError> {
    let row = sqlx::query(SELECT_STATS.as_str())
        .bind(id.to_string())
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.map(|row| RowReader::new(&row, "campaign_stats", id).stats())
        .transpose()
}

pub(super) async fn all_stats(
    pool: &SqlitePool,
) -> Result<Vec<(TenantId, CampaignId, CampaignStats)>, StoreError> {
    let rows = sqlx::query(SELECT_ALL_STATS.as_str())
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.iter()
        .map(|row| {
            let r = RowReader::new(row, "campaign_stats", raw_text(row, "campaign"));
            Ok((r.tenant("tenant")?, r.parse("campaign")?, r.stats()?))
        })
        .collect()
}

pub(super) async fn message_masks(
    pool: &SqlitePool,
    ids: &[MessageId],
) -> Result<HashMap<MessageId, u32>, StoreError> {
    let mut out = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    let mut conn = pool.acquire().await.map_err(db_err)?;
    let full_chunk_sql = select_masks_sql(MASK_IDS_PER_QUERY);
    for chunk in ids.chunks(MASK_IDS_PER_QUERY) {
        let tail_sql;
        let sql = if chunk.len() == MASK_IDS_PER_QUERY {
            full_chunk_sql.as_str()
        } else {
            tail_sql = select_masks_sql(chunk.len());
            tail_sql.as_str()
        };
        let mut q = sqlx::query(sql);
        for id in chunk {
            q = q.bind(id.to_string());
        }
        let rows = q.fetch_all(&mut *conn).await.map_err(db_err)?;
        for row in &rows {
            let r = RowReader::new(row, "messages", raw_text(row, "message_id"));
            out.insert(r.parse("message_id")?, r.u32("mask")?);
        }
    }
    Ok(out)
}

/// Bounced messages of a campaign by reason (the part of `detail` before the colon)
/// and class, in one grouped query.
pub(super) async fn bounce_reasons(
    pool: &SqlitePool,
    campaign: CampaignId,
) -> Result<Vec<ReasonCount>, StoreError> {
    let rows = sqlx::query(
        "SELECT CASE WHEN instr(detail, ':') > 0 THEN trim(substr(detail, 1, instr(detail, ':') - 1))
                     ELSE 'unknown' END AS reason,
                status = 'bounced_hard' AS hard, count(*) AS n
         FROM messages WHERE campaign = ? AND status IN ('bounced_hard', 'bounced_soft')
         GROUP BY 1, 2",
    )
    .bind(campaign.to_string())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    let mut out = rows
        .iter()
        .map(|row| RowReader::new(row, "messages", campaign).reason_count())
        .collect::<Result<Vec<_>, _>>()?;
    by_frequency(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_sql_matches_the_column_counts() {
        let sql = upsert_messages_sql(3);
        assert_eq!(sql.matches('?').count(), 3 * MESSAGE_COLUMNS);
        assert_eq!(UPSERT_STATS.matches('?').count(), 2 + 12 + 1);
        assert_eq!(
            select_masks_sql(MASK_IDS_PER_QUERY).matches('?').count(),
            MASK_IDS_PER_QUERY
        );
    }
}
