//! Consumer offsets and the analytics state on Postgres: the shared SQL of
//! [`crate::sql::analytics`], and the entry to Postgres' own write path of a flush
//! ([`super::flush`]).

crate::sql::analytics::analytics!(sqlx::PgPool, sqlx::PgConnection, crate::sql::postgres);

pub(crate) use aggregates::commit_aggregates;

/// Postgres' write path of an analytics flush: the batch's rows made unique and sorted,
/// then written in chunks by [`crate::postgres::flush`], which sets rejected rows aside
/// instead of failing the flush.
mod aggregates {
    use super::write_offsets;
    use crate::postgres::flush::{self, FlushMethod, MessageRow, Rejected, StatsRow};
    use crate::postgres::leases::check_fence;
    use crate::postgres::rows::{BEGIN_WRITE, db_err, stats_to_i64, to_i64};
    use maily_engine::ports::{AggregateBatch, MessageState, StoreError};
    use maily_engine::{CampaignId, CampaignStats, MessageId, TenantId};
    use sqlx::PgPool;
    use std::collections::BTreeMap;
    use tracing::{debug, warn};

    /// The stats rows of a batch, one per campaign (a later row for the same campaign
    /// wins, as if written one after the other), in campaign order.
    fn stats_rows(
        part: u32,
        stats: &[(TenantId, CampaignId, CampaignStats)],
    ) -> Result<Vec<StatsRow<'_>>, StoreError> {
        let mut by_campaign: BTreeMap<CampaignId, StatsRow<'_>> = BTreeMap::new();
        for (index, (tenant, campaign, s)) in stats.iter().enumerate() {
            let counters = stats_to_i64(s, format_args!("campaign_stats {campaign}"))?;
            let row = StatsRow {
                index,
                campaign: campaign.to_string(),
                part: i64::from(part),
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
    /// Sorting by key makes concurrent flushes lock shared rows in the same order, so
    /// they queue instead of deadlocking.
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

    /// Commits one analytics flush: the fence check, stats, message states and offsets
    /// in one transaction. See [`Store::commit_aggregates`](maily_engine::ports::Store)
    /// on [`crate::postgres::PostgresStore`] for what is committed when rows are
    /// rejected.
    pub(crate) async fn commit_aggregates(
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
        let stats = stats_rows(batch.part, &batch.stats)?;
        let messages = message_rows(&batch.messages);

        let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
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
            warn!(
                group,
                row = %r.row,
                reason = %r.reason,
                "row rejected by postgres, flush committed without it"
            );
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
            let rows = stats_rows(0, &batch).unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!((rows[0].index, rows[0].counters[0]), (0, 2));
        }
    }
}
