//! Consumer offsets and the analytics state on SQLite: the shared SQL of
//! [`crate::sql::analytics`], and SQLite's own write path of a flush.

crate::sql::analytics::analytics!(sqlx::SqlitePool, sqlx::SqliteConnection, crate::sql::sqlite);

pub(crate) use aggregates::commit_aggregates;

/// SQLite's write path of an analytics flush: a statement per stats row, and message
/// states many rows to a statement.
mod aggregates {
    use super::write_offsets;
    use crate::sqlite::leases::check_fence;
    use crate::sqlite::rows::{
        BEGIN_WRITE, NOW, db_err, placeholders, stats_columns, stats_to_i64,
    };
    use maily_engine::ports::{AggregateBatch, StoreError};
    use maily_engine::{CampaignStats, Timestamp};
    use sqlx::SqlitePool;
    use std::sync::LazyLock;
    use tracing::debug;

    /// Message rows written per INSERT. Each statement round-trips to SQLite's worker
    /// thread, so batching rows is what makes large flushes cheap; 128 rows of 7 values
    /// stay far below SQLite's limit on bound parameters.
    const MESSAGE_ROWS_PER_STATEMENT: usize = 128;

    const MESSAGE_COLUMNS: usize = 7;

    // SQLite builds before 3.32 allow only 999 bound parameters per statement.
    const _: () = assert!(MESSAGE_ROWS_PER_STATEMENT * MESSAGE_COLUMNS < 999);

    static UPSERT_STATS: LazyLock<String> = LazyLock::new(|| {
        let updates: Vec<String> = CampaignStats::FIELDS
            .iter()
            .map(|f| format!("{f} = excluded.{f}"))
            .collect();
        format!(
            "INSERT INTO campaign_stats (campaign, part, tenant, {}, updated_at)
             VALUES (?, ?, ?, {}, ?)
             ON CONFLICT (campaign, part) DO UPDATE SET tenant = excluded.tenant, {},
                 updated_at = excluded.updated_at",
            stats_columns(),
            placeholders(CampaignStats::FIELDS.len()),
            updates.join(", ")
        )
    });

    fn upsert_messages_sql(rows: usize) -> String {
        // `updated_at` (for retention) is the time of the write.
        let row = format!("({}, {NOW})", placeholders(MESSAGE_COLUMNS));
        format!(
            "INSERT INTO messages (message_id, tenant, campaign, recipient, mask, status, detail,
                 updated_at)
             VALUES {}
             ON CONFLICT (message_id) DO UPDATE SET tenant = excluded.tenant,
                 campaign = excluded.campaign, recipient = excluded.recipient,
                 mask = messages.mask | excluded.mask, status = excluded.status,
                 detail = COALESCE(excluded.detail, messages.detail),
                 updated_at = excluded.updated_at",
            vec![row; rows].join(", ")
        )
    }

    pub(crate) async fn commit_aggregates(
        pool: &SqlitePool,
        batch: &AggregateBatch,
    ) -> Result<(), StoreError> {
        let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
        check_fence(&mut tx, batch.fence.as_ref()).await?;
        let now = Timestamp::now().0;
        for (tenant, campaign, stats) in &batch.stats {
            let counters = stats_to_i64(stats, format_args!("campaign_stats {campaign}"))?;
            let mut q = sqlx::query(UPSERT_STATS.as_str())
                .bind(campaign.to_string())
                .bind(i64::from(batch.part))
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

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn generated_sql_matches_the_column_counts() {
            let sql = upsert_messages_sql(3);
            assert_eq!(sql.matches('?').count(), 3 * MESSAGE_COLUMNS);
            assert_eq!(UPSERT_STATS.matches('?').count(), 3 + 12 + 1);
        }
    }
}
