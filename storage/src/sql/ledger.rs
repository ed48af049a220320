//! The hash-chained anchor ledger, chain anchors, Merkle proofs and pending chain
//! submissions, one SQL text for both dialects.
//!
//! An appended entry must chain onto the head it read, so no other append may land
//! between that read and the insert. On SQLite the write transaction (`BEGIN
//! IMMEDIATE`) holds the database's write lock from its first read; on Postgres a
//! table lock taken first (`rows::lock_writers`) keeps other writers of the ledger
//! out while readers go on.

/// The ledger functions for one backend (see [`super::domains::domains`] for the
/// parameters; `$conn` is its connection type). Its `rows` also names how a write
/// transaction begins (`BEGIN_WRITE`), what keeps a table's other writers out until
/// it commits (`lock_writers`), and the store's clock for bookkeeping columns (`NOW`).
macro_rules! ledger {
    ($pool:ty, $conn:ty, $row:ty, $sql:path) => {
        use super::rows::{
            BEGIN_WRITE, NOW, RowReader, db_err, lock_writers, raw_text, row_err, stats_columns,
            stats_to_i64, to_i64, unique_err,
        };
        use $crate::sql::numbered;
        use maily_engine::merkle::{CampaignLeaf, Hash32};
        use maily_engine::ports::{ChainSubmission, LedgerEntry, StoreError, StoredProof};
        use maily_engine::{CampaignId, CampaignStats, Timestamp};
        use std::sync::LazyLock;
        use tracing::{info, warn};

        static UPSERT_PROOF: LazyLock<String> = LazyLock::new(|| {
            let updates: Vec<String> = CampaignStats::FIELDS
                .iter()
                .map(|f| format!("{f} = EXCLUDED.{f}"))
                .collect();
            $sql(&format!(
                "INSERT INTO proofs (epoch, campaign, leaf_index, root, {}, reward_total, proof)
                 VALUES ($1, $2::uuid, $3, $4, {}, $17::numeric, $18)
                 ON CONFLICT (epoch, campaign) DO UPDATE SET leaf_index = EXCLUDED.leaf_index,
                     root = EXCLUDED.root, {}, reward_total = EXCLUDED.reward_total,
                     proof = EXCLUDED.proof",
                stats_columns(),
                numbered(5, CampaignStats::FIELDS.len()),
                updates.join(", ")
            ))
            .into_owned()
        });

        static SELECT_PROOF: LazyLock<String> = LazyLock::new(|| {
            $sql(&format!(
                "SELECT leaf_index, root, {}, reward_total::text AS reward_total, proof
                 FROM proofs WHERE epoch = $1 AND campaign = $2::uuid",
                stats_columns()
            ))
            .into_owned()
        });

        const SELECT_LEDGER: &str = "SELECT epoch, root, prev, hash, at FROM ledger";

        fn ledger_row(row: &$row) -> Result<LedgerEntry, StoreError> {
            let r = RowReader::new(row, "ledger", raw_text(row, "epoch"));
            Ok(LedgerEntry {
                epoch: r.u64("epoch")?,
                root: r.hash("root")?,
                prev: r.hash("prev")?,
                hash: r.hash("hash")?,
                at: Timestamp(r.get("at")?),
            })
        }

        async fn head_on(conn: &mut $conn) -> Result<Option<LedgerEntry>, StoreError> {
            let row = sqlx::query(&format!("{SELECT_LEDGER} ORDER BY epoch DESC LIMIT 1"))
                .fetch_optional(conn)
                .await
                .map_err(db_err)?;
            row.as_ref().map(ledger_row).transpose()
        }

        pub(crate) async fn ledger_head(pool: &$pool) -> Result<Option<LedgerEntry>, StoreError> {
            let mut conn = pool.acquire().await.map_err(db_err)?;
            head_on(&mut conn).await
        }

        pub(crate) async fn append_ledger(pool: &$pool, e: &LedgerEntry) -> Result<(), StoreError> {
            let epoch = to_i64(e.epoch, format_args!("ledger {}", e.epoch), "epoch")?;
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            // The head read below must still be the head when the insert commits, so two
            // appenders cannot both chain onto it (see the module's doc for each dialect).
            if let Some(lock) = lock_writers("ledger") {
                sqlx::query(&lock).execute(&mut *tx).await.map_err(db_err)?;
            }
            let head = head_on(&mut tx).await?;
            let expected_prev = head.as_ref().map_or([0; 32], |h| h.hash);
            // Epochs are anchored in order, so the head is always the highest epoch and an
            // epoch at or below it is either recorded already or out of order.
            if let Some(h) = head.as_ref().filter(|h| e.epoch <= h.epoch) {
                return Err(StoreError::Conflict(format!(
                    "ledger entry for epoch {} is not after the head, epoch {}",
                    e.epoch, h.epoch
                )));
            }
            if e.prev != expected_prev {
                return Err(StoreError::Conflict(format!(
                    "ledger entry for epoch {} chains to {} but the head is {}",
                    e.epoch,
                    hex::encode(e.prev),
                    match &head {
                        Some(h) => format!("epoch {} with hash {}", h.epoch, hex::encode(h.hash)),
                        None => "empty (expected zeros)".into(),
                    }
                )));
            }
            sqlx::query(&$sql(
                "INSERT INTO ledger (epoch, root, prev, hash, at) VALUES ($1, $2, $3, $4, $5)",
            ))
            .bind(epoch)
            .bind(&e.root[..])
            .bind(&e.prev[..])
            .bind(&e.hash[..])
            .bind(e.at.0)
            .execute(&mut *tx)
            .await
            .map_err(|err| {
                unique_err(err, || {
                    format!("ledger already holds an entry with hash {}", hex::encode(e.hash))
                })
            })?;
            tx.commit().await.map_err(db_err)?;
            info!(epoch = e.epoch, hash = %hex::encode(e.hash), "ledger entry appended");
            Ok(())
        }

        pub(crate) async fn ledger_entry(
            pool: &$pool,
            epoch: u64,
        ) -> Result<Option<LedgerEntry>, StoreError> {
            let Ok(key) = i64::try_from(epoch) else {
                return Ok(None);
            };
            let row = sqlx::query(&$sql(&format!("{SELECT_LEDGER} WHERE epoch = $1")))
                .bind(key)
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            row.as_ref().map(ledger_row).transpose()
        }

        pub(crate) async fn ledger_entries(pool: &$pool) -> Result<Vec<LedgerEntry>, StoreError> {
            let rows = sqlx::query(&format!("{SELECT_LEDGER} ORDER BY epoch"))
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
            rows.iter().map(ledger_row).collect()
        }

        pub(crate) async fn record_anchor(
            pool: &$pool,
            chain: &str,
            epoch: u64,
            root: &Hash32,
            reference: &str,
        ) -> Result<(), StoreError> {
            static INSERT: LazyLock<String> = LazyLock::new(|| {
                $sql(&format!(
                    "INSERT INTO anchors (chain, epoch, root, reference, anchored_at)
                     VALUES ($1, $2, $3, $4, {NOW})
                     ON CONFLICT (chain, epoch) DO NOTHING"
                ))
                .into_owned()
            });
            let key = to_i64(epoch, format_args!("anchor {chain}/{epoch}"), "epoch")?;
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            // Whoever inserts the key first wins, and the read below finds the winner's
            // row: on Postgres a concurrent insert of the same key makes this one wait
            // for it and then do nothing; on SQLite the two cannot overlap at all.
            let inserted = sqlx::query(&INSERT)
                .bind(chain)
                .bind(key)
                .bind(&root[..])
                .bind(reference)
                .execute(&mut *tx)
                .await
                .map_err(|e| row_err(e, || format!("anchor {chain}/{epoch}")))?
                .rows_affected();
            if inserted == 0 {
                // Recording the same anchor again is fine; a different root for the same
                // epoch means two different trees were published, which someone must see.
                let row = sqlx::query(&$sql(
                    "SELECT root, reference FROM anchors WHERE chain = $1 AND epoch = $2",
                ))
                .bind(chain)
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                let r = RowReader::new(&row, "anchors", format_args!("{chain}/{epoch}"));
                let stored = r.hash("root")?;
                if stored != *root {
                    return Err(StoreError::Conflict(format!(
                        "epoch {epoch} is already anchored on {chain} with root {}, not {}",
                        hex::encode(stored),
                        hex::encode(root)
                    )));
                }
                let stored_ref: String = r.get("reference")?;
                if stored_ref != reference {
                    warn!(
                        chain,
                        epoch,
                        kept = %stored_ref,
                        ignored = %reference,
                        "epoch anchored twice; keeping the first reference"
                    );
                }
            }
            tx.commit().await.map_err(db_err)?;
            Ok(())
        }

        pub(crate) async fn epochs_to_anchor(
            pool: &$pool,
            chain: &str,
        ) -> Result<Vec<u64>, StoreError> {
            let epochs: Vec<i64> = sqlx::query_scalar(&$sql(
                "SELECT s.epoch FROM settlements s
                 WHERE NOT EXISTS (SELECT 1 FROM anchors a WHERE a.chain = $1 AND a.epoch = s.epoch)
                 ORDER BY s.epoch",
            ))
            .bind(chain)
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            epochs
                .into_iter()
                .map(|e| {
                    u64::try_from(e).map_err(|_| {
                        StoreError::Corrupt(format!("settlements row {e}: negative epoch"))
                    })
                })
                .collect()
        }

        pub(crate) async fn store_proofs(
            pool: &$pool,
            proofs: &[StoredProof],
        ) -> Result<(), StoreError> {
            let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(db_err)?;
            for p in proofs {
                let row = format!("proof {}/{}", p.leaf.epoch, p.leaf.campaign);
                let path: Vec<u8> = p.proof.concat();
                let mut q = sqlx::query(UPSERT_PROOF.as_str())
                    .bind(to_i64(p.leaf.epoch, &row, "epoch")?)
                    .bind(p.leaf.campaign.to_string())
                    .bind(i64::from(p.leaf_index))
                    .bind(&p.root[..]);
                for c in stats_to_i64(&p.leaf.stats, &row)? {
                    q = q.bind(c);
                }
                q.bind(p.leaf.reward_total.to_string())
                    .bind(path)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| row_err(e, || row.clone()))?;
            }
            tx.commit().await.map_err(db_err)
        }

        pub(crate) async fn proof(
            pool: &$pool,
            epoch: u64,
            campaign: CampaignId,
        ) -> Result<Option<StoredProof>, StoreError> {
            let Ok(key) = i64::try_from(epoch) else {
                return Ok(None);
            };
            let row = sqlx::query(SELECT_PROOF.as_str())
                .bind(key)
                .bind(campaign.to_string())
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            let Some(row) = row else { return Ok(None) };
            let r = RowReader::new(&row, "proofs", format_args!("{epoch}/{campaign}"));
            Ok(Some(StoredProof {
                leaf: CampaignLeaf {
                    epoch,
                    campaign,
                    stats: r.stats()?,
                    reward_total: r.parse("reward_total")?,
                },
                leaf_index: r.u32("leaf_index")?,
                root: r.hash("root")?,
                proof: r.hashes("proof")?,
            }))
        }

        pub(crate) async fn save_submission(
            pool: &$pool,
            s: &ChainSubmission,
        ) -> Result<(), StoreError> {
            static UPSERT: LazyLock<String> = LazyLock::new(|| {
                $sql(&format!(
                    "INSERT INTO chain_submissions (chain, epoch, nonce, hashes, raw, saved_at)
                     VALUES ($1, $2, $3, $4, $5, {NOW})
                     ON CONFLICT (chain, epoch) DO UPDATE SET nonce = EXCLUDED.nonce,
                         hashes = EXCLUDED.hashes, raw = EXCLUDED.raw,
                         saved_at = EXCLUDED.saved_at"
                ))
                .into_owned()
            });
            let row = format!("submission {}/{}", s.chain, s.epoch);
            sqlx::query(&UPSERT)
                .bind(&s.chain)
                .bind(to_i64(s.epoch, &row, "epoch")?)
                .bind(to_i64(s.nonce, &row, "nonce")?)
                .bind(s.hashes.concat())
                .bind(&s.raw)
                .execute(pool)
                .await
                .map_err(db_err)?;
            Ok(())
        }

        pub(crate) async fn submission(
            pool: &$pool,
            chain: &str,
            epoch: u64,
        ) -> Result<Option<ChainSubmission>, StoreError> {
            let Ok(key) = i64::try_from(epoch) else {
                return Ok(None);
            };
            let row = sqlx::query(&$sql(
                "SELECT nonce, hashes, raw FROM chain_submissions WHERE chain = $1 AND epoch = $2",
            ))
            .bind(chain)
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
            let Some(row) = row else { return Ok(None) };
            RowReader::new(&row, "chain_submissions", format_args!("{chain}/{epoch}"))
                .chain_submission(chain, epoch)
                .map(Some)
        }

        pub(crate) async fn clear_submission(
            pool: &$pool,
            chain: &str,
            epoch: u64,
        ) -> Result<(), StoreError> {
            let Ok(key) = i64::try_from(epoch) else {
                return Ok(());
            };
            sqlx::query(&$sql(
                "DELETE FROM chain_submissions WHERE chain = $1 AND epoch = $2",
            ))
            .bind(chain)
            .bind(key)
            .execute(pool)
            .await
            .map_err(db_err)?;
            Ok(())
        }

        #[cfg(test)]
        mod tests {
            #[test]
            fn proof_upsert_numbers_every_column() {
                // $1 to $18 (?1 to ?18 in SQLite), each once, in order.
                let sql = super::UPSERT_PROOF.as_str();
                let params: Vec<usize> = sql
                    .split(['$', '?'])
                    .skip(1)
                    .map(|p| {
                        let digits = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
                        p[..digits].parse().unwrap()
                    })
                    .collect();
                assert_eq!(params, (1..=18).collect::<Vec<_>>(), "{sql}");
            }
        }
    };
}

pub(crate) use ledger;
