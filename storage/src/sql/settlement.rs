//! Settled reward epochs, one SQL text for both dialects.

/// The settlement functions for one backend (see [`super::domains::domains`] for the
/// parameters). Its `rows` also names how a write transaction and a read snapshot
/// begin (`BEGIN_WRITE`, `BEGIN_SNAPSHOT`); `analytics::write_offsets` and
/// `leases::check_fence` are its own.
macro_rules! settlement {
    ($pool:ty, $sql:path) => {
        use super::analytics::write_offsets;
        use super::rows::{
            BEGIN_SNAPSHOT, BEGIN_WRITE, RowReader, db_err, raw_text, row_err, stats_columns,
            stats_to_i64, to_i64, unique_err,
        };
        use $crate::sql::numbered;
        use maily_engine::ports::{Fence, Settlement, SettlementEntry, StoreError, StoredOffset};
        use maily_engine::{CampaignStats, Timestamp};
        use std::sync::LazyLock;
        use tracing::info;

        static INSERT_ENTRY: LazyLock<String> = LazyLock::new(|| {
            $sql(&format!(
                "INSERT INTO settlement_entries
                     (epoch, campaign, idx, tenant, {}, reward_total, reward_delta)
                 VALUES ($1, $2::uuid, $3, $4, {}, $17::numeric, $18::numeric)",
                stats_columns(),
                numbered(5, CampaignStats::FIELDS.len())
            ))
            .into_owned()
        });

        static SELECT_ENTRIES: LazyLock<String> = LazyLock::new(|| {
            $sql(&format!(
                "SELECT campaign::text AS campaign, tenant, {},
                     reward_total::text AS reward_total, reward_delta::text AS reward_delta
                 FROM settlement_entries WHERE epoch = $1 ORDER BY idx",
                stats_columns()
            ))
            .into_owned()
        });

        pub(crate) async fn commit_settlement(
            pool: &$pool,
            s: &Settlement,
            fence: Option<&Fence>,
        ) -> Result<(), StoreError> {
            let epoch = to_i64(s.epoch, format_args!("settlement {}", s.epoch), "epoch")?;
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            super::leases::check_fence(&mut tx, fence).await?;
            sqlx::query(&$sql(
                "INSERT INTO settlements (epoch, settled_at, grp) VALUES ($1, $2, $3)",
            ))
                .bind(epoch)
                .bind(s.settled_at.0)
                .bind(&s.group)
                .execute(&mut *tx)
                .await
                .map_err(|e| unique_err(e, || format!("epoch {} is already settled", s.epoch)))?;
            for (idx, o) in s.offsets.iter().enumerate() {
                let row = format!("settlement {} offset {}/{}", s.epoch, o.topic, o.partition);
                sqlx::query(&$sql(
                    "INSERT INTO settlement_offsets (epoch, idx, topic, part, next_offset)
                     VALUES ($1, $2, $3, $4, $5)",
                ))
                .bind(epoch)
                .bind(idx as i64)
                .bind(&o.topic)
                .bind(i64::from(o.partition))
                .bind(to_i64(o.next, &row, "next")?)
                .execute(&mut *tx)
                .await
                .map_err(|e| row_err(e, || row.clone()))?;
            }
            for (idx, e) in s.entries.iter().enumerate() {
                let row = format!("settlement {} campaign {}", s.epoch, e.campaign);
                let mut q = sqlx::query(INSERT_ENTRY.as_str())
                    .bind(epoch)
                    .bind(e.campaign.to_string())
                    .bind(idx as i64)
                    .bind(e.tenant.as_str());
                for c in stats_to_i64(&e.stats, &row)? {
                    q = q.bind(c);
                }
                q.bind(e.reward_total.to_string())
                    .bind(e.reward_delta.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(|err| {
                        unique_err(err, || {
                            format!("campaign {} appears twice in epoch {}", e.campaign, s.epoch)
                        })
                    })?;
            }
            write_offsets(&mut tx, &s.group, &s.offsets).await?;
            tx.commit().await.map_err(db_err)?;
            info!(
                epoch = s.epoch,
                entries = s.entries.len(),
                group = %s.group,
                "settlement committed"
            );
            Ok(())
        }

        pub(crate) async fn settlement(
            pool: &$pool,
            epoch: u64,
        ) -> Result<Option<Settlement>, StoreError> {
            let Ok(key) = i64::try_from(epoch) else {
                return Ok(None);
            };
            // One snapshot for the header, offsets and entries: a settlement is written in one
            // transaction and must be read as one.
            let mut tx = pool.begin_with(BEGIN_SNAPSHOT).await.map_err(db_err)?;
            let row = sqlx::query(&$sql("SELECT settled_at, grp FROM settlements WHERE epoch = $1"))
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            let Some(row) = row else { return Ok(None) };
            let r = RowReader::new(&row, "settlements", epoch);
            let settled_at = Timestamp(r.get("settled_at")?);
            let group: String = r.get("grp")?;

            let offset_rows = sqlx::query(&$sql(
                "SELECT topic, part, next_offset FROM settlement_offsets WHERE epoch = $1
                 ORDER BY idx",
            ))
            .bind(key)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            let offsets = offset_rows
                .iter()
                .map(|row| {
                    let r = RowReader::new(row, "settlement_offsets", epoch);
                    Ok(StoredOffset {
                        topic: r.get("topic")?,
                        partition: r.u32("part")?,
                        next: r.u64("next_offset")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;

            let entry_rows = sqlx::query(SELECT_ENTRIES.as_str())
                .bind(key)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            let entries = entry_rows
                .iter()
                .map(|row| {
                    let key = format!("{epoch}/{}", raw_text(row, "campaign"));
                    let r = RowReader::new(row, "settlement_entries", key);
                    Ok(SettlementEntry {
                        tenant: r.tenant("tenant")?,
                        campaign: r.parse("campaign")?,
                        stats: r.stats()?,
                        reward_total: r.parse("reward_total")?,
                        reward_delta: r.parse("reward_delta")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            tx.commit().await.map_err(db_err)?;
            Ok(Some(Settlement {
                epoch,
                settled_at,
                group,
                offsets,
                entries,
            }))
        }

        pub(crate) async fn last_settled_epoch(pool: &$pool) -> Result<Option<u64>, StoreError> {
            let max: Option<i64> = sqlx::query_scalar("SELECT MAX(epoch) FROM settlements")
                .fetch_one(pool)
                .await
                .map_err(db_err)?;
            max.map(|e| {
                u64::try_from(e)
                    .map_err(|_| {
                        StoreError::Corrupt(format!("settlements row {e}: negative epoch"))
                    })
            })
            .transpose()
        }
    };
}

pub(crate) use settlement;
