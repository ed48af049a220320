//! Consumer offsets and the analytics state (campaign stats, message states), one SQL
//! text for both dialects.
//!
//! Writing a flush's stats and message states (`commit_aggregates`) stays each
//! backend's own, next to the expansion: SQLite batches rows into multi-row statements
//! sized to its limit on bound parameters, Postgres sends each column as one array and
//! isolates the rows it rejects (`crate::postgres::flush`). Both build on
//! `write_offsets` here.

/// The offset and analytics functions for one backend (see [`super::domains::domains`]
/// for the parameters; `$conn` is its connection type). Its `rows` also names how a
/// write transaction begins (`BEGIN_WRITE`), how a column matches a list of values
/// (`any_of`, `bind_all`, at most `ANY_OF_CHUNK` per statement) and where a substring
/// occurs (`strpos`).
macro_rules! analytics {
    ($pool:ty, $conn:ty, $sql:path) => {
        use super::leases::check_fence;
        use super::rows::{
            ANY_OF_CHUNK, BEGIN_WRITE, RowReader, any_of, bind_all, db_err, raw_text, row_err,
            stats_columns, strpos, to_i64,
        };
        use maily_engine::ports::{Fence, StoreError, StoredOffset};
        use maily_engine::{
            CampaignId, CampaignStats, MessageId, ReasonCount, TenantId, by_frequency,
        };
        use std::collections::{BTreeMap, HashMap};
        use std::sync::LazyLock;

        pub(crate) async fn load_offsets(
            pool: &$pool,
            group: &str,
            topic: &str,
        ) -> Result<BTreeMap<u32, u64>, StoreError> {
            let rows = sqlx::query(&$sql(
                "SELECT part, next_offset FROM consumer_offsets WHERE grp = $1 AND topic = $2",
            ))
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

        pub(crate) async fn save_offsets(
            pool: &$pool,
            group: &str,
            offsets: &[StoredOffset],
            fence: Option<&Fence>,
        ) -> Result<(), StoreError> {
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            check_fence(&mut tx, fence).await?;
            write_offsets(&mut tx, group, offsets).await?;
            tx.commit().await.map_err(db_err)
        }

        /// Upserts a consumer group's positions on `conn`, inside the caller's
        /// transaction.
        ///
        /// One statement per offset, in order, so a position given twice ends at the
        /// later value; a flush carries one offset per partition it consumed, a handful,
        /// and the connection keeps the statement prepared, so the loop only binds.
        pub(crate) async fn write_offsets(
            conn: &mut $conn,
            group: &str,
            offsets: &[StoredOffset],
        ) -> Result<(), StoreError> {
            static UPSERT: LazyLock<String> = LazyLock::new(|| {
                $sql(
                    "INSERT INTO consumer_offsets (grp, topic, part, next_offset)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (grp, topic, part)
                     DO UPDATE SET next_offset = EXCLUDED.next_offset",
                )
                .into_owned()
            });
            for o in offsets {
                let row = || format!("offset {group}/{}/{}", o.topic, o.partition);
                let next = to_i64(o.next, row(), "next")?;
                sqlx::query(&UPSERT)
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

        pub(crate) async fn campaign_stats(
            pool: &$pool,
            id: CampaignId,
        ) -> Result<Option<CampaignStats>, StoreError> {
            static SELECT: LazyLock<String> = LazyLock::new(|| {
                $sql(&format!(
                    "SELECT {} FROM campaign_stats WHERE campaign = $1::uuid
                     GROUP BY campaign",
                    summed_stats()
                ))
                .into_owned()
            });
            let row = sqlx::query(&SELECT)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            row.map(|row| RowReader::new(&row, "campaign_stats", id).stats())
                .transpose()
        }

        pub(crate) async fn part_stats(
            pool: &$pool,
            id: CampaignId,
            part: u32,
        ) -> Result<Option<CampaignStats>, StoreError> {
            static SELECT: LazyLock<String> = LazyLock::new(|| {
                $sql(&format!(
                    "SELECT {} FROM campaign_stats WHERE campaign = $1::uuid AND part = $2",
                    stats_columns()
                ))
                .into_owned()
            });
            let row = sqlx::query(&SELECT)
                .bind(id.to_string())
                .bind(i64::from(part))
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            row.map(|row| RowReader::new(&row, "campaign_stats", format_args!("{id}/{part}")).stats())
                .transpose()
        }

        /// Each stats column summed over a campaign's parts, under its own name.
        fn summed_stats() -> String {
            CampaignStats::FIELDS
                .iter()
                .map(|f| format!("sum({f})::bigint AS {f}"))
                .collect::<Vec<_>>()
                .join(", ")
        }

        pub(crate) async fn all_stats(
            pool: &$pool,
        ) -> Result<Vec<(TenantId, CampaignId, CampaignStats)>, StoreError> {
            static SELECT: LazyLock<String> = LazyLock::new(|| {
                $sql(&format!(
                    "SELECT campaign::text AS campaign, min(tenant) AS tenant, {} FROM campaign_stats
                     GROUP BY campaign ORDER BY campaign",
                    summed_stats()
                ))
                .into_owned()
            });
            let rows = sqlx::query(&SELECT)
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

        pub(crate) async fn message_masks(
            pool: &$pool,
            ids: &[MessageId],
        ) -> Result<HashMap<MessageId, u32>, StoreError> {
            let mut out = HashMap::with_capacity(ids.len());
            if ids.is_empty() {
                return Ok(out);
            }
            let select = |n| {
                let matching = any_of("message_id", 1, n, "uuid");
                $sql(&format!(
                    "SELECT message_id::text AS message_id, mask FROM messages WHERE {matching}"
                ))
                .into_owned()
            };
            // Full chunks share one SQL text, so the statement is prepared once per
            // connection and reused; only the last, shorter chunk may need its own.
            let full_chunk_sql = select(ANY_OF_CHUNK);
            let mut conn = pool.acquire().await.map_err(db_err)?;
            for chunk in ids.chunks(ANY_OF_CHUNK) {
                let keys: Vec<String> = chunk.iter().map(MessageId::to_string).collect();
                let tail_sql;
                let sql = if chunk.len() == ANY_OF_CHUNK {
                    full_chunk_sql.as_str()
                } else {
                    tail_sql = select(chunk.len());
                    tail_sql.as_str()
                };
                let rows = bind_all(sqlx::query(sql), &keys)
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

        /// Bounced messages of a campaign by reason (the part of `detail` before the
        /// colon) and class, in one grouped query.
        pub(crate) async fn bounce_reasons(
            pool: &$pool,
            campaign: CampaignId,
        ) -> Result<Vec<ReasonCount>, StoreError> {
            static SELECT: LazyLock<String> = LazyLock::new(|| {
                let colon = strpos("detail", "':'");
                $sql(&format!(
                    "SELECT CASE WHEN {colon} > 0 THEN trim(substr(detail, 1, {colon} - 1))
                                 ELSE 'unknown' END AS reason,
                            status = 'bounced_hard' AS hard, count(*) AS n
                     FROM messages
                     WHERE campaign = $1::uuid AND status IN ('bounced_hard', 'bounced_soft')
                     GROUP BY 1, 2"
                ))
                .into_owned()
            });
            let rows = sqlx::query(&SELECT)
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
    };
}

pub(crate) use analytics;
