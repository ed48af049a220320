//! Consumer offsets and the analytics state: campaign stats and message states.

use super::flush::{self, FlushMethod, MessageRow, Rejected, StatsRow};
use super::leases::check_fence;
use super::rows::{RowReader, db_err, raw_text, row_err, stats_columns, stats_to_i64, to_i64};
use maily_engine::ports::{AggregateBatch, Fence, MessageState, StoreError, StoredOffset};
use maily_engine::{CampaignId, CampaignStats, MessageId, ReasonCount, TenantId, by_frequency};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use tracing::{debug, warn};

/// Ids per `= ANY($1)` array when reading masks: big enough to make large reads
/// cheap, small enough to keep each statement's result modest.
const MASK_IDS_PER_QUERY: usize = 10_000;

static SELECT_STATS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM campaign_stats WHERE campaign = $1::uuid",
        stats_columns()
    )
});

static SELECT_ALL_STATS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT campaign::text AS campaign, tenant, {} FROM campaign_stats
         ORDER BY campaign_stats.campaign",
        stats_columns()
    )
});

pub(super) async fn load_offsets(
    pool: &PgPool,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<u32, u64>, StoreError> {
    let rows =
        sqlx::query("SELECT part, next_offset FROM consumer_offsets WHERE grp = $1 AND topic = $2")
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
    pool: &PgPool,
    group: &str,
    offsets: &[StoredOffset],
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    check_fence(&mut tx, fence).await?;
    write_offsets(&mut tx, group, offsets).await?;
    tx.commit().await.map_err(db_err)
}

/// Upserts a consumer group's positions on `conn`, inside the caller's transaction.
///
/// One statement per offset, in order, so a position given twice ends at the later
/// value; a flush carries one offset per partition it consumed, a handful.
pub(super) async fn write_offsets(
    conn: &mut PgConnection,
    group: &str,
    offsets: &[StoredOffset],
) -> Result<(), StoreError> {
    for o in offsets {
        let row = || format!("offset {group}/{}/{}", o.topic, o.partition);
        let next = to_i64(o.next, row(), "next")?;
        sqlx::query(
            "INSERT INTO consumer_offsets (grp, topic, part, next_offset) VALUES ($1, $2, $3, $4)
             ON CONFLICT (grp, topic, part) DO UPDATE SET next_offset = EXCLUDED.next_offset",
        )
        .bind(group)
        .bind(&o.topic)
        .bind(i64::from(o.partition))
        .bind(next)
        .execute(&mut *conn)
        .await
        .map_err(|e| row_err(e, row))?;
    }
    Ok(())
}

/// The stats rows of a batch, one per campaign (a later row for the same campaign
/// wins, as if written one after the other), in campaign order.
fn stats_rows(
    stats: &[(TenantId, CampaignId, CampaignStats)],
) -> Result<Vec<StatsRow<'_>>, StoreError> {
    let mut by_campaign: BTreeMap<CampaignId, StatsRow<'_>> = BTreeMap::new();
    for (index, (tenant, campaign, s)) in stats.iter().enumerate() {
        let counters = stats_to_i64(s, format_args!("campaign_stats {campaign}"))?;
        let row = StatsRow {
            index,
            campaign: campaign.to_string(),
            tenant: tenant.as_str(),
            counters,
        };
        by_campaign
            .entry(*campaign)
            .and_modify(|earlier| {
                *earlier = StatsRow {
                    index: earlier.index,
                    ..row.clone()
                }
            })
            .or_insert(row);
    }
    Ok(by_campaign.into_values().collect())
}

/// The message rows of a batch, one per message id, in id order.
///
/// A message given twice is merged the way two upserts in a row would leave it: the
/// later state wins, except that a missing detail keeps the earlier one. (One
/// multi-row upsert cannot touch a row twice, so duplicates must go before it.)
/// Sorting by key makes concurrent flushes lock shared rows in the same order, so they
/// queue instead of deadlocking.
fn message_rows(messages: &[MessageState]) -> Vec<MessageRow<'_>> {
    let mut by_id: BTreeMap<MessageId, MessageRow<'_>> = BTreeMap::new();
    for (index, m) in messages.iter().enumerate() {
        let row = MessageRow {
            index,
            message_id: m.message_id.to_string(),
            tenant: m.tenant.as_str(),
            campaign: m.campaign.to_string(),
            recipient: m.recipient.as_str(),
            mask: i64::from(m.mask),
            status: m.status.as_str(),
            detail: m.detail.as_deref(),
        };
        by_id
            .entry(m.message_id)
            .and_modify(|earlier| {
                *earlier = MessageRow {
                    index: earlier.index,
                    detail: row.detail.or(earlier.detail),
                    ..row.clone()
                }
            })
            .or_insert(row);
    }
    by_id.into_values().collect()
}

/// Commits one analytics flush: the fence check, stats, message states and offsets in
/// one transaction. See [`Store::commit_aggregates`](maily_engine::ports::Store) on
/// [`super::PostgresStore`] for what is committed when rows are rejected.
pub(super) async fn commit_aggregates(
    pool: &PgPool,
    batch: &AggregateBatch,
    method: FlushMethod,
    chunk_rows: usize,
) -> Result<(), StoreError> {
    // Values Postgres could never hold refuse the whole batch before anything is sent.
    for o in &batch.offsets {
        let row = format_args!("offset {}/{}/{}", batch.group, o.topic, o.partition);
        to_i64(o.next, row, "next")?;
    }
    let stats = stats_rows(&batch.stats)?;
    let messages = message_rows(&batch.messages);

    let mut tx = pool.begin().await.map_err(db_err)?;
    check_fence(&mut tx, batch.fence.as_ref()).await?;
    if method == FlushMethod::Copy {
        flush::create_staging_tables(&mut tx).await?;
    }
    let mut rejected = flush::write_rows(&mut tx, &stats, method, chunk_rows).await?;
    rejected.extend(flush::write_rows(&mut tx, &messages, method, chunk_rows).await?);
    write_offsets(&mut tx, &batch.group, &batch.offsets).await?;
    tx.commit().await.map_err(db_err)?;
    debug!(
        group = %batch.group,
        stats = stats.len(),
        messages = messages.len(),
        offsets = batch.offsets.len(),
        rejected = rejected.len(),
        "aggregates committed"
    );
    match rejected.first() {
        None => Ok(()),
        Some(first) => Err(rejected_rows(&batch.group, first, &rejected)),
    }
}

/// Rejected rows logged one by one per flush; the rest are only counted.
const REJECTED_ROWS_LOGGED: usize = 10;

fn rejected_rows(group: &str, first: &Rejected, all: &[Rejected]) -> StoreError {
    for r in all.iter().take(REJECTED_ROWS_LOGGED) {
        warn!(group, row = %r.row, reason = %r.reason, "row rejected by postgres, flush committed without it");
    }
    if all.len() > REJECTED_ROWS_LOGGED {
        warn!(
            group,
            more = all.len() - REJECTED_ROWS_LOGGED,
            "more rows rejected by postgres"
        );
    }
    StoreError::RowsRejected {
        row: first.row.clone(),
        reason: first.reason.clone(),
        rejected: all.len(),
    }
}

pub(super) async fn campaign_stats(
    pool: &PgPool,
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
    pool: &PgPool,
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
    pool: &PgPool,
    ids: &[MessageId],
) -> Result<HashMap<MessageId, u32>, StoreError> {
    let mut out = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    let mut conn = pool.acquire().await.map_err(db_err)?;
    for chunk in ids.chunks(MASK_IDS_PER_QUERY) {
        let keys: Vec<String> = chunk.iter().map(MessageId::to_string).collect();
        let rows = sqlx::query(
            "SELECT message_id::text AS message_id, mask FROM messages
             WHERE message_id = ANY($1::uuid[])",
        )
        .bind(keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
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
    pool: &PgPool,
    campaign: CampaignId,
) -> Result<Vec<ReasonCount>, StoreError> {
    let rows = sqlx::query(
        "SELECT CASE WHEN strpos(detail, ':') > 0 THEN btrim(split_part(detail, ':', 1))
                     ELSE 'unknown' END AS reason,
                status = 'bounced_hard' AS hard, count(*) AS n
         FROM messages WHERE campaign = $1::uuid AND status IN ('bounced_hard', 'bounced_soft')
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
    use maily_engine::testkit::addr;

    fn state(id: MessageId, mask: u32, detail: Option<&str>) -> MessageState {
        MessageState {
            message_id: id,
            tenant: TenantId::parse("acme").unwrap(),
            campaign: CampaignId::new(),
            recipient: addr("ann@example.com"),
            mask,
            status: "delivered".into(),
            detail: detail.map(String::from),
        }
    }

    #[test]
    fn duplicate_messages_merge_like_successive_upserts() {
        let (a, b) = (MessageId::new(), MessageId::new());
        let batch = vec![
            state(a, 1, Some("550 no such user")),
            state(b, 1, None),
            state(a, 3, None),
        ];
        let rows = message_rows(&batch);
        assert_eq!(rows.len(), 2);
        let merged = rows.iter().find(|r| r.message_id == a.to_string()).unwrap();
        assert_eq!(merged.mask, 3, "the later state wins");
        assert_eq!(
            merged.detail,
            Some("550 no such user"),
            "a missing detail keeps the earlier"
        );
        assert_eq!(merged.index, 0, "named by its first position");
        assert!(rows.windows(2).all(|w| w[0].message_id < w[1].message_id));
    }

    #[test]
    fn duplicate_stats_keep_the_later_counters() {
        let t = TenantId::parse("acme").unwrap();
        let c = CampaignId::new();
        let s = |injected| CampaignStats {
            injected,
            ..Default::default()
        };
        let batch = vec![(t.clone(), c, s(1)), (t, c, s(2))];
        let rows = stats_rows(&batch).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].index, rows[0].counters[0]), (0, 2));
    }
}
