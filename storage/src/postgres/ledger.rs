//! The hash-chained anchor ledger, chain anchors and Merkle proofs.

use super::rows::{
    RowReader, db_err, placeholders, raw_text, row_err, stats_columns, stats_to_i64, stats_updates,
    to_i64, unique_err,
};
use maily_engine::merkle::{CampaignLeaf, Hash32};
use maily_engine::ports::{ChainSubmission, LedgerEntry, StoreError, StoredProof};
use maily_engine::{CampaignId, CampaignStats, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool};
use std::sync::LazyLock;
use tracing::{info, warn};

static UPSERT_PROOF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO proofs (epoch, campaign, leaf_index, root, {}, reward_total, proof)
         VALUES ($1, $2::uuid, $3, $4, {}, $17::numeric, $18)
         ON CONFLICT (epoch, campaign) DO UPDATE SET leaf_index = EXCLUDED.leaf_index,
             root = EXCLUDED.root, {}, reward_total = EXCLUDED.reward_total,
             proof = EXCLUDED.proof",
        stats_columns(),
        placeholders(5, CampaignStats::FIELDS.len(), ""),
        stats_updates()
    )
});

static SELECT_PROOF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT leaf_index, root, {}, reward_total::text AS reward_total, proof FROM proofs
         WHERE epoch = $1 AND campaign = $2::uuid",
        stats_columns()
    )
});

const SELECT_HEAD: &str =
    "SELECT epoch, root, prev, hash, at FROM ledger ORDER BY epoch DESC LIMIT 1";
const SELECT_ENTRY: &str = "SELECT epoch, root, prev, hash, at FROM ledger WHERE epoch = $1";

fn ledger_row(row: &PgRow) -> Result<LedgerEntry, StoreError> {
    let r = RowReader::new(row, "ledger", raw_text(row, "epoch"));
    Ok(LedgerEntry {
        epoch: r.u64("epoch")?,
        root: r.hash("root")?,
        prev: r.hash("prev")?,
        hash: r.hash("hash")?,
        at: Timestamp(r.get("at")?),
    })
}

async fn head_on(conn: &mut PgConnection) -> Result<Option<LedgerEntry>, StoreError> {
    let row = sqlx::query(SELECT_HEAD)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(ledger_row).transpose()
}

pub(super) async fn ledger_head(pool: &PgPool) -> Result<Option<LedgerEntry>, StoreError> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    head_on(&mut conn).await
}

pub(super) async fn append_ledger(pool: &PgPool, e: &LedgerEntry) -> Result<(), StoreError> {
    let epoch = to_i64(e.epoch, format_args!("ledger {}", e.epoch), "epoch")?;
    let mut tx = pool.begin().await.map_err(db_err)?;
    // The head read below must still be the head when the insert commits, so two
    // appenders cannot both chain onto it. This lock mode conflicts with itself but
    // not with readers.
    sqlx::query("LOCK TABLE ledger IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
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
    sqlx::query("INSERT INTO ledger (epoch, root, prev, hash, at) VALUES ($1, $2, $3, $4, $5)")
        .bind(epoch)
        .bind(&e.root[..])
        .bind(&e.prev[..])
        .bind(&e.hash[..])
        .bind(e.at.0)
        .execute(&mut *tx)
        .await
        .map_err(|err| {
            unique_err(err, || {
                format!(
                    "ledger already holds an entry with hash {}",
                    hex::encode(e.hash)
                )
            })
        })?;
    tx.commit().await.map_err(db_err)?;
    info!(epoch = e.epoch, hash = %hex::encode(e.hash), "ledger entry appended");
    Ok(())
}

pub(super) async fn ledger_entry(
    pool: &PgPool,
    epoch: u64,
) -> Result<Option<LedgerEntry>, StoreError> {
    let Ok(key) = i64::try_from(epoch) else {
        return Ok(None);
    };
    let row = sqlx::query(SELECT_ENTRY)
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(ledger_row).transpose()
}

pub(super) async fn ledger_entries(pool: &PgPool) -> Result<Vec<LedgerEntry>, StoreError> {
    let rows = sqlx::query("SELECT epoch, root, prev, hash, at FROM ledger ORDER BY epoch")
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.iter().map(ledger_row).collect()
}

pub(super) async fn record_anchor(
    pool: &PgPool,
    chain: &str,
    epoch: u64,
    root: &Hash32,
    reference: &str,
) -> Result<(), StoreError> {
    let key = to_i64(epoch, format_args!("anchor {chain}/{epoch}"), "epoch")?;
    let row_name = || format!("anchor {chain}/{epoch}");
    let mut tx = pool.begin().await.map_err(db_err)?;
    // A concurrent insert of the same key makes this one wait for it and then do
    // nothing, so the read below always finds the winner's row.
    let inserted = sqlx::query(
        "INSERT INTO anchors (chain, epoch, root, reference) VALUES ($1, $2, $3, $4)
         ON CONFLICT (chain, epoch) DO NOTHING",
    )
    .bind(chain)
    .bind(key)
    .bind(&root[..])
    .bind(reference)
    .execute(&mut *tx)
    .await
    .map_err(|e| row_err(e, row_name))?
    .rows_affected();
    if inserted == 0 {
        // Recording the same anchor again is fine; a different root for the same
        // epoch means two different trees were published, which someone must see.
        let row =
            sqlx::query("SELECT root, reference FROM anchors WHERE chain = $1 AND epoch = $2")
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
            warn!(chain, epoch, kept = %stored_ref, ignored = %reference, "epoch anchored twice; keeping the first reference");
        }
    }
    tx.commit().await.map_err(db_err)?;
    Ok(())
}

pub(super) async fn epochs_to_anchor(pool: &PgPool, chain: &str) -> Result<Vec<u64>, StoreError> {
    let epochs: Vec<i64> = sqlx::query_scalar(
        "SELECT s.epoch FROM settlements s
         WHERE NOT EXISTS (SELECT 1 FROM anchors a WHERE a.chain = $1 AND a.epoch = s.epoch)
         ORDER BY s.epoch",
    )
    .bind(chain)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    epochs
        .into_iter()
        .map(|e| {
            u64::try_from(e)
                .map_err(|_| StoreError::Corrupt(format!("settlements row {e}: negative epoch")))
        })
        .collect()
}

pub(super) async fn store_proofs(pool: &PgPool, proofs: &[StoredProof]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(db_err)?;
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

pub(super) async fn proof(
    pool: &PgPool,
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

pub(super) async fn save_submission(pool: &PgPool, s: &ChainSubmission) -> Result<(), StoreError> {
    let row = format!("submission {}/{}", s.chain, s.epoch);
    sqlx::query(
        "INSERT INTO chain_submissions (chain, epoch, nonce, hashes, raw)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (chain, epoch) DO UPDATE SET nonce = excluded.nonce,
             hashes = excluded.hashes, raw = excluded.raw, saved_at = now()",
    )
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

pub(super) async fn submission(
    pool: &PgPool,
    chain: &str,
    epoch: u64,
) -> Result<Option<ChainSubmission>, StoreError> {
    let Ok(key) = i64::try_from(epoch) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT nonce, hashes, raw FROM chain_submissions WHERE chain = $1 AND epoch = $2",
    )
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

pub(super) async fn clear_submission(
    pool: &PgPool,
    chain: &str,
    epoch: u64,
) -> Result<(), StoreError> {
    let Ok(key) = i64::try_from(epoch) else {
        return Ok(());
    };
    sqlx::query("DELETE FROM chain_submissions WHERE chain = $1 AND epoch = $2")
        .bind(chain)
        .bind(key)
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_upsert_numbers_every_column() {
        assert!(UPSERT_PROOF.contains("$5, $6"));
        assert!(UPSERT_PROOF.contains("$16, $17::numeric, $18"));
    }
}
