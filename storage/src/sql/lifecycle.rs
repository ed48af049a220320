//! Campaign lifecycle, one SQL text for both dialects: states and their transitions,
//! staged recipients, and the idempotency records of single sends.
//!
//! A transition is one conditional UPDATE in a write transaction, and of several
//! callers racing exactly one matches. On Postgres (READ COMMITTED) a second caller
//! waits for the first one's row lock, then re-checks the status on the row as
//! committed, finds it changed and updates nothing. On SQLite the transaction holds
//! the write lock from its start (`BEGIN IMMEDIATE`), so the status the UPDATE checks
//! is the status when it commits, and racing callers take turns.

/// The lifecycle functions for one backend (see [`super::domains::domains`] for the
/// parameters; `$conn` is its connection type). Its `rows` also names how a write
/// transaction begins (`BEGIN_WRITE`), how a column matches a list of values
/// (`any_of`, `bind_all`, at most `ANY_OF_CHUNK` per statement), what orders campaigns
/// created in the same instant (`tiebreak`) and which errors reject a row's values
/// (`row_err`); its `catalog` reads campaign rows (`CAMPAIGN_COLUMNS`, `campaign_row`).
///
/// The module that expands it writes the two bulk inserts whose form differs between
/// the dialects (multi-row VALUES or one row at a time in SQLite, UNNEST arrays in
/// Postgres):
/// - `insert_staged(conn, campaign, chunk) -> Result<(), sqlx::Error>` stages a chunk
///   of recipients (`&[&StagedRecipient]`, distinct message ids) of `campaign` (its id
///   as text) as pending, in the given order after every row staged before; a message
///   id staged before is replaced and moves to the end.
/// - `insert_sends(conn, sends) -> Result<(), sqlx::Error>` stores each of `sends`
///   whose `(tenant, key)` is new, in the given order: of a key given twice, the first.
macro_rules! lifecycle {
    ($pool:ty, $conn:ty, $row:ty, $sql:path) => {
        use super::catalog::{CAMPAIGN_COLUMNS, campaign_row};
        use super::rows::{
            ANY_OF_CHUNK, BEGIN_WRITE, NOW, RowReader, any_of, bind_all, db_err, is_kind, millis,
            raw_text, row_err, tiebreak,
        };
        use maily_engine::ports::{IdempotentSend, StoreError, Transition};
        use maily_engine::{
            Campaign, CampaignId, CampaignState, CampaignStatus, MessageId, StagedRecipient,
            TenantId, Timestamp,
        };
        use sqlx::error::ErrorKind;
        use std::collections::{BTreeMap, BTreeSet, HashMap};

        async fn state_on(
            conn: &mut $conn,
            id: CampaignId,
        ) -> Result<Option<CampaignState>, StoreError> {
            let row = sqlx::query(&$sql(
                "SELECT status, scheduled_at, status_at FROM campaigns WHERE id = $1::uuid",
            ))
            .bind(id.to_string())
            .fetch_optional(conn)
            .await
            .map_err(db_err)?;
            row.map(|row| RowReader::new(&row, "campaigns", id).campaign_state())
                .transpose()
        }

        pub(crate) async fn campaign_state(
            pool: &$pool,
            id: CampaignId,
        ) -> Result<Option<CampaignState>, StoreError> {
            let mut conn = pool.acquire().await.map_err(db_err)?;
            state_on(&mut conn, id).await
        }

        pub(crate) async fn campaigns(
            pool: &$pool,
            tenant: &TenantId,
        ) -> Result<Vec<(Campaign, CampaignState)>, StoreError> {
            let rows = sqlx::query(&$sql(&format!(
                "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE tenant = $1
                 ORDER BY created_at, {}",
                tiebreak("campaigns")
            )))
            .bind(tenant.as_str())
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter().map(campaign_row).collect()
        }

        pub(crate) async fn transition_campaign(
            pool: &$pool,
            id: CampaignId,
            from: &[CampaignStatus],
            to: CampaignStatus,
            scheduled_at: Option<Timestamp>,
            now: Timestamp,
        ) -> Result<Transition, StoreError> {
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            let changed = if from.is_empty() {
                None
            } else {
                let from: Vec<String> = from.iter().map(|s| s.as_str().to_string()).collect();
                let sql = $sql(&format!(
                    "UPDATE campaigns SET status = $1, scheduled_at = coalesce($2, scheduled_at),
                         status_at = $3
                     WHERE id = $4::uuid AND {}
                     RETURNING status, scheduled_at, status_at",
                    any_of("status", 5, from.len(), "text")
                ))
                .into_owned();
                let query = sqlx::query(&sql)
                    .bind(to.as_str())
                    .bind(scheduled_at.map(|t| t.0))
                    .bind(now.0)
                    .bind(id.to_string());
                let row = bind_all(query, &from)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                row.map(|row| RowReader::new(&row, "campaigns", id).campaign_state())
                    .transpose()?
            };
            let outcome = match changed {
                Some(state) => {
                    if to == CampaignStatus::Cancelled {
                        sqlx::query(&$sql(
                            "DELETE FROM staged_recipients
                             WHERE campaign = $1::uuid AND state = 'pending'",
                        ))
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    }
                    Transition::Done(state)
                }
                // On Postgres a fresh snapshot: the status a racing winner committed.
                None => match state_on(&mut tx, id).await? {
                    Some(state) => Transition::Refused(state),
                    None => Transition::Unknown,
                },
            };
            tx.commit().await.map_err(db_err)?;
            Ok(outcome)
        }

        pub(crate) async fn due_campaigns(
            pool: &$pool,
            now: Timestamp,
        ) -> Result<Vec<CampaignId>, StoreError> {
            let rows = sqlx::query(&$sql(
                "SELECT id::text AS id FROM campaigns
                 WHERE status = 'scheduled' AND scheduled_at <= $1
                 ORDER BY scheduled_at, campaigns.id",
            ))
            .bind(now.0)
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter().map(campaign_id).collect()
        }

        fn campaign_id(row: &$row) -> Result<CampaignId, StoreError> {
            RowReader::new(row, "campaigns", raw_text(row, "id")).parse("id")
        }

        /// `recipients` without the earlier rows of a message id given twice, as if
        /// staged one after the other: the later row wins and takes the later place. One
        /// Postgres statement cannot upsert a key twice.
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

        /// Stages `recipients`, all or none, with one statement per `chunk_rows` of them.
        pub(crate) async fn stage_recipients(
            pool: &$pool,
            campaign: CampaignId,
            recipients: &[StagedRecipient],
            chunk_rows: usize,
        ) -> Result<(), StoreError> {
            if recipients.is_empty() {
                return Ok(());
            }
            let rows = last_of_each(recipients);
            let campaign_text = campaign.to_string();
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            for chunk in rows.chunks(chunk_rows.max(1)) {
                insert_staged(&mut tx, &campaign_text, chunk).await.map_err(|e| {
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

        pub(crate) async fn pending_recipients(
            pool: &$pool,
            campaign: CampaignId,
            limit: usize,
        ) -> Result<Vec<StagedRecipient>, StoreError> {
            let rows = sqlx::query(&$sql(
                "SELECT message_id::text AS message_id, email, vars FROM staged_recipients
                 WHERE campaign = $1::uuid AND state = 'pending' ORDER BY seq LIMIT $2",
            ))
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

        pub(crate) async fn mark_launched(
            pool: &$pool,
            campaign: CampaignId,
            ids: &[MessageId],
        ) -> Result<(), StoreError> {
            if ids.is_empty() {
                return Ok(());
            }
            let campaign_text = campaign.to_string();
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            for chunk in ids.chunks(ANY_OF_CHUNK) {
                let keys: Vec<String> = chunk.iter().map(MessageId::to_string).collect();
                let sql = $sql(&format!(
                    "UPDATE staged_recipients SET state = 'launched', launched_at = {}
                     WHERE campaign = $1::uuid AND {}",
                    millis(NOW),
                    any_of("message_id", 2, keys.len(), "uuid")
                ))
                .into_owned();
                bind_all(sqlx::query(&sql).bind(&campaign_text), &keys)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)
        }

        pub(crate) async fn launchable_campaigns(
            pool: &$pool,
        ) -> Result<Vec<CampaignId>, StoreError> {
            let rows = sqlx::query(&$sql(&format!(
                "SELECT c.id::text AS id FROM campaigns c WHERE c.status = 'running'
                   AND EXISTS (SELECT 1 FROM staged_recipients s
                               WHERE s.campaign = c.id AND s.state = 'pending')
                 ORDER BY c.created_at, {}",
                tiebreak("c")
            )))
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            rows.iter().map(campaign_id).collect()
        }

        pub(crate) async fn staged_counts(
            pool: &$pool,
            campaign: CampaignId,
        ) -> Result<(u64, u64), StoreError> {
            let row = sqlx::query(&$sql(
                "SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
                        count(*) FILTER (WHERE state = 'launched') AS launched
                 FROM staged_recipients WHERE campaign = $1::uuid",
            ))
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

        /// Deletes up to `limit` rows of each kind past its cutoff (see
        /// `RetentionStore::prune`), each kind in its own statement: a row is needed
        /// by nothing once past its cutoff, so no transaction spans them.
        pub(crate) async fn prune(
            pool: &$pool,
            cutoffs: &maily_engine::ports::Cutoffs,
            limit: usize,
        ) -> Result<maily_engine::ports::Pruned, StoreError> {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let run = |sql: &'static str, cutoff: i64| async move {
                sqlx::query(&$sql(sql))
                    .bind(cutoff)
                    .bind(limit)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(db_err)
            };
            Ok(maily_engine::ports::Pruned {
                keyed_sends: run(
                    "DELETE FROM idempotent_sends WHERE (tenant, idem_key) IN
                     (SELECT tenant, idem_key FROM idempotent_sends
                      WHERE accepted_at < $1 LIMIT $2)",
                    cutoffs.keyed_sends.0,
                )
                .await?,
                launched_recipients: run(
                    "DELETE FROM staged_recipients WHERE message_id IN
                     (SELECT message_id FROM staged_recipients
                      WHERE state = 'launched' AND launched_at < $1 LIMIT $2)",
                    cutoffs.launched_recipients.0,
                )
                .await?,
                messages: run(
                    "DELETE FROM messages WHERE message_id IN
                     (SELECT message_id FROM messages WHERE updated_at < $1 LIMIT $2)",
                    cutoffs.messages.0,
                )
                .await?,
            })
        }

        pub(crate) async fn fix_shards(
            pool: &$pool,
            id: CampaignId,
            proposed: u32,
        ) -> Result<u32, StoreError> {
            // Set once: the first caller's number stands, whoever asks later.
            sqlx::query(&$sql(
                "UPDATE campaigns SET shards = $2 WHERE id = $1::uuid AND shards = 0",
            ))
            .bind(id.to_string())
            .bind(i64::from(proposed.clamp(1, u32::from(u16::MAX))))
            .execute(pool)
            .await
            .map_err(db_err)?;
            let row = sqlx::query(&$sql(
                "SELECT shards::bigint AS shards FROM campaigns WHERE id = $1::uuid",
            ))
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::InvalidRow {
                row: format!("campaign {id}"),
                reason: "unknown campaign".into(),
            })?;
            RowReader::new(&row, "campaigns", id).u32("shards")
        }

        const SELECT_SEND: &str = "SELECT tenant, idem_key, campaign::text AS campaign, \
             message_id::text AS message_id, email, fingerprint, accepted_at, enqueued \
             FROM idempotent_sends";

        fn send_row(row: &$row) -> Result<IdempotentSend, StoreError> {
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

        pub(crate) async fn reserve_sends(
            pool: &$pool,
            sends: &[IdempotentSend],
        ) -> Result<Vec<IdempotentSend>, StoreError> {
            if sends.is_empty() {
                return Ok(Vec::new());
            }
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            // A concurrent request with the same key waits for this one's commit, then
            // finds its row: on Postgres it waits on the inserted key and does nothing,
            // on SQLite it waits for the write lock this transaction took at BEGIN.
            insert_sends(&mut tx, sends).await.map_err(|e| {
                row_err(e, || format!("idempotent send {}/{}", sends[0].tenant, sends[0].key))
            })?;
            let mut keys: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for s in sends {
                keys.entry(s.tenant.as_str()).or_default().insert(s.key.as_str());
            }
            let mut by_key: HashMap<(String, String), IdempotentSend> =
                HashMap::with_capacity(sends.len());
            for (tenant, tenant_keys) in keys {
                let tenant_keys: Vec<String> =
                    tenant_keys.into_iter().map(str::to_string).collect();
                for chunk in tenant_keys.chunks(ANY_OF_CHUNK) {
                    // On Postgres a fresh snapshot, which sees a racing request's row.
                    let sql = $sql(&format!(
                        "{SELECT_SEND} WHERE tenant = $1 AND {}",
                        any_of("idem_key", 2, chunk.len(), "text")
                    ))
                    .into_owned();
                    let rows = bind_all(sqlx::query(&sql).bind(tenant), chunk)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    for row in &rows {
                        let send = send_row(row)?;
                        by_key.insert((send.tenant.as_str().to_string(), send.key.clone()), send);
                    }
                }
            }
            tx.commit().await.map_err(db_err)?;
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

        pub(crate) async fn mark_sends_enqueued(
            pool: &$pool,
            tenant: &TenantId,
            keys: &[String],
        ) -> Result<(), StoreError> {
            if keys.is_empty() {
                return Ok(());
            }
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            for chunk in keys.chunks(ANY_OF_CHUNK) {
                let sql = $sql(&format!(
                    "UPDATE idempotent_sends SET enqueued = true WHERE tenant = $1 AND {}",
                    any_of("idem_key", 2, chunk.len(), "text")
                ))
                .into_owned();
                bind_all(sqlx::query(&sql).bind(tenant.as_str()), chunk)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)
        }
    };
}

pub(crate) use lifecycle;
